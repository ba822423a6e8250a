"""The template tags: the bell's markup for a signed-in user, nothing for an anonymous one,
the unread count, and which URLs become links."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import AbstractUser, AnonymousUser
from django.template import Context, Template
from django.test import RequestFactory
from django.utils import timezone

from notifications.models import Notification
from notifications.templatetags.notifications import BELL_SIZE, notification_href

pytestmark = pytest.mark.django_db(transaction=True)


def render(template: str, user: AbstractUser | AnonymousUser) -> str:
    request = RequestFactory().get("/somewhere/")
    request.user = user
    return Template("{% load notifications %}" + template).render(
        Context({"request": request, "user": user})
    )


@pytest.mark.parametrize(
    "url",
    [
        "/orders/42?tab=1#top",
        "/",
        "https://example.com/x",
        "http://example.com",
        "HTTPS://EXAMPLE.COM/",
    ],
)
def test_http_urls_and_site_paths_are_links(url: str) -> None:
    assert notification_href(url) == url


@pytest.mark.parametrize(
    "url",
    [
        "",
        None,
        42,
        "javascript:alert(1)",
        "JavaScript:alert(1)",
        "java\tscript:alert(1)",
        " javascript:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "vbscript:x",
        "mailto:a@example.com",
        "//evil.example/",
        "/\\evil.example/",
        "orders/42",
        "https://example.com/a b",
        "https://example.com/\u202egpj.exe",
    ],
)
def test_every_other_url_is_no_link(url: object) -> None:
    assert notification_href(url) == ""


def test_the_bell_renders_nothing_for_an_anonymous_user(db: None) -> None:
    assert render("{% notifications_bell %}", AnonymousUser()).strip() == ""
    assert render("{% notifications_unread_count %}", AnonymousUser()) == ""


def test_the_bell_shows_the_newest_the_unread_count_and_what_the_script_needs(
    alice: AbstractUser, bob: AbstractUser
) -> None:
    made = [Notification.objects.create(user=alice, text=f"n{i}") for i in range(BELL_SIZE + 2)]
    Notification.objects.filter(pk=made[-1].pk).update(read_at=timezone.now())
    Notification.objects.create(user=bob, text="bob's")
    html = render("{% notifications_bell %}", alice)

    shown = [
        int(pk) for pk in re.findall(r'class="notifications-bell-item[^"]*" data-id="(\d+)"', html)
    ]
    assert shown == [n.pk for n in reversed(made)][:BELL_SIZE]
    assert "bob&#x27;s" not in html and "bob's" not in html
    assert 'data-unread="9"' in html
    assert ", 9 unread" in html
    assert (
        f'data-stream-url="/notifications/stream/?last_event_id={made[-1].pk}&amp;user={alice.pk}"'
        in html
    )
    assert 'data-api-notifications="/notifications/api/notifications/"' in html
    assert 'data-api-read="/notifications/api/read/"' in html
    assert re.search(r'data-csrf-token="[A-Za-z0-9]{64}"', html)
    assert "notifications/bell.css" in html and "notifications/bell.js" in html
    # The read one carries no unread mark; the others do.
    assert html.count("notifications-bell-item is-unread") == BELL_SIZE - 1
    button = re.search(r'<button type="button" class="notifications-bell-button"[^>]*>', html)
    assert button is not None
    assert 'aria-haspopup="menu"' in button.group() and 'aria-expanded="false"' in button.group()
    controls = re.search(r'aria-controls="([^"]+)"', button.group())
    assert controls is not None and f'id="{controls.group(1)}" role="menu"' in html


def test_the_bell_escapes_text_and_links_only_safe_urls(alice: AbstractUser) -> None:
    Notification.objects.create(
        user=alice, text="<b>bold</b>", url="/orders/1?a=1&b=2", level="warning"
    )
    hostile = Notification.objects.create(user=alice, text="x")
    Notification.objects.filter(pk=hostile.pk).update(url="javascript:alert(1)")
    html = render("{% notifications_bell %}", alice)
    assert "<b>" not in html and "&lt;b&gt;bold&lt;/b&gt;" in html
    assert 'href="/orders/1?a=1&amp;b=2"' in html
    assert "javascript:" not in html
    assert 'data-level="warning"' in html and "Warning: " in html


def test_two_bells_on_one_page_have_distinct_ids(alice: AbstractUser) -> None:
    html = render("{% notifications_bell %}{% notifications_bell %}", alice)
    ids = re.findall(r' id="([^"]+)"', html)
    assert len(ids) == len(set(ids)) == 4


def test_the_unread_count_tag(alice: AbstractUser) -> None:
    Notification.objects.create(user=alice, text="a")
    Notification.objects.create(user=alice, text="b", read_at=timezone.now())
    assert render("{% notifications_unread_count %}", alice) == "1"
