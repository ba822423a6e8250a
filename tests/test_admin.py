"""The admin's sending forms, through the test client with CSRF checks enforced."""

from __future__ import annotations

import re
from datetime import timedelta
from html import unescape
from typing import Any

import pytest
from django.contrib.auth.models import AbstractUser, Group, Permission
from django.test import Client
from django.utils import timezone

from notifications.models import Notification

from .support import make_user

pytestmark = pytest.mark.django_db

USERS = "/admin/auth/user/"
NOTIFICATIONS = "/admin/notifications/notification/"
ADD = "/admin/notifications/notification/add/"
BROADCAST = "/admin/notifications/notification/broadcast/"


def csrf_token(html: str) -> str:
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
    assert match, "no CSRF token in the page"
    return match.group(1)


def messages_of(html: str) -> list[str]:
    found = re.findall(r'<li class="(?:success|error|warning|info)">(.*?)</li>', html, re.S)
    return [unescape(m) for m in found]


@pytest.fixture
def admin_client() -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(make_user("boss", is_staff=True, is_superuser=True))
    return client


def start_user_action(client: Client, users: list[AbstractUser], **extra: str) -> str:
    """Pick users on the user list and choose "Send notification…"; return the next page."""
    token = csrf_token(client.get(USERS).content.decode())
    page = client.post(
        USERS,
        {
            "csrfmiddlewaretoken": token,
            "action": "notify_users",
            "index": "0",
            "_selected_action": [str(u.pk) for u in users],
            **extra,
        },
    )
    assert page.status_code == 200, page.content[:2000]
    return page.content.decode()


def test_user_action_asks_for_the_text_then_sends_to_the_selected_users(
    admin_client: Client,
) -> None:
    alice, bob = make_user("alice"), make_user("bob", is_active=False)
    carol = make_user("carol")

    form = start_user_action(admin_client, [alice, bob])
    assert "To <strong>2</strong> selected users, of which 1 inactive" in form
    sent = admin_client.post(
        USERS,
        {
            "csrfmiddlewaretoken": csrf_token(form),
            "action": "notify_users",
            "_selected_action": [str(alice.pk), str(bob.pk)],
            "select_across": "0",
            "text": "Lunch is served\n(2nd floor)",
            "apply": "Send",
        },
        follow=True,
    )

    assert sent.redirect_chain == [(USERS, 302)]
    assert messages_of(sent.content.decode()) == ["Sent 2 notifications to the selected users."]
    rows = Notification.objects.order_by("user_id")
    assert [(n.user_id, n.text) for n in rows] == [
        (alice.pk, "Lunch is served\n(2nd floor)"),
        (bob.pk, "Lunch is served\n(2nd floor)"),
    ]
    assert not Notification.objects.filter(user=carol).exists()


def test_user_action_across_all_pages_sends_to_every_user_the_filter_matches(
    admin_client: Client,
) -> None:
    staff = [make_user(f"staff{i}", is_staff=True) for i in range(3)]
    make_user("outsider")
    url = f"{USERS}?is_staff__exact=1"
    token = csrf_token(admin_client.get(url).content.decode())
    form = admin_client.post(
        url,
        {
            "csrfmiddlewaretoken": token,
            "action": "notify_users",
            "index": "0",
            "select_across": "1",
            "_selected_action": [str(staff[0].pk)],
        },
    ).content.decode()
    # boss is staff too: 4 users match the filter.
    assert "To <strong>4</strong> selected users" in form

    admin_client.post(
        url,
        {
            "csrfmiddlewaretoken": csrf_token(form),
            "action": "notify_users",
            "_selected_action": [str(staff[0].pk)],
            "select_across": "1",
            "text": "Staff only",
            "apply": "Send",
        },
    )

    assert set(Notification.objects.values_list("user__username", flat=True)) == {
        "boss",
        "staff0",
        "staff1",
        "staff2",
    }


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("   \n ", "The text is empty"),
        ("", "The text is empty"),
        ("x" * 31, "The text has 31 characters; at most 30 are allowed"),
    ],
)
def test_user_action_refuses_bad_text_and_sends_nothing(
    admin_client: Client, settings: Any, text: str, error: str
) -> None:
    settings.NOTIFICATIONS_MAX_LENGTH = 30
    alice = make_user("alice")
    form = start_user_action(admin_client, [alice])

    again = admin_client.post(
        USERS,
        {
            "csrfmiddlewaretoken": csrf_token(form),
            "action": "notify_users",
            "_selected_action": [str(alice.pk)],
            "select_across": "0",
            "text": text,
            "apply": "Send",
        },
    )

    assert again.status_code == 200
    assert error in again.content.decode()
    assert not Notification.objects.exists()


def test_user_action_without_a_csrf_token_is_refused(admin_client: Client) -> None:
    alice = make_user("alice")
    refused = admin_client.post(
        USERS,
        {
            "action": "notify_users",
            "_selected_action": [str(alice.pk)],
            "text": "hi",
            "apply": "Send",
        },
    )
    assert refused.status_code == 403
    assert not Notification.objects.exists()


def test_user_action_is_not_offered_to_staff_who_may_not_add_notifications() -> None:
    clerk = make_user("clerk", is_staff=True)
    clerk.user_permissions.add(Permission.objects.get(codename="view_user"))
    client = Client(enforce_csrf_checks=True)
    client.force_login(clerk)

    assert 'value="notify_users"' not in client.get(USERS).content.decode()

    clerk.user_permissions.add(Permission.objects.get(codename="add_notification"))
    assert 'value="notify_users"' in client.get(USERS).content.decode()


def test_broadcast_to_a_group_confirms_the_count_then_sends_to_its_active_members(
    admin_client: Client,
) -> None:
    editors = Group.objects.create(name="editors")
    for name, active in [("ed", True), ("eve", True), ("old", False)]:
        make_user(name, is_active=active).groups.add(editors)
    make_user("reader")
    assert 'href="/admin/notifications/notification/broadcast/"' in (
        admin_client.get(NOTIFICATIONS).content.decode()
    )

    form = admin_client.get(BROADCAST).content.decode()
    confirm = admin_client.post(
        BROADCAST,
        {
            "csrfmiddlewaretoken": csrf_token(form),
            "text": "Style guide updated",
            "group": editors.pk,
        },
    ).content.decode()
    assert (
        '<strong id="broadcast-count">2</strong> users (the active members of &quot;editors&quot;)'
        in confirm
    )
    assert not Notification.objects.exists()

    sent = admin_client.post(
        BROADCAST,
        {
            "csrfmiddlewaretoken": csrf_token(confirm),
            "text": "Style guide updated",
            "group": str(editors.pk),
            "confirm": "yes",
        },
        follow=True,
    )

    assert sent.redirect_chain == [(NOTIFICATIONS, 302)]
    assert messages_of(sent.content.decode()) == [
        'Sent 2 notifications to the active members of "editors".'
    ]
    assert set(Notification.objects.values_list("user__username", flat=True)) == {"ed", "eve"}


def test_broadcast_to_all_active_users_leaves_out_inactive_ones(admin_client: Client) -> None:
    make_user("alice")
    make_user("gone", is_active=False)
    token = csrf_token(admin_client.get(BROADCAST).content.decode())

    sent = admin_client.post(
        BROADCAST,
        {"csrfmiddlewaretoken": token, "text": "Hello all", "group": "", "confirm": "yes"},
        follow=True,
    )

    assert messages_of(sent.content.decode()) == ["Sent 2 notifications to all active users."]
    assert set(Notification.objects.values_list("user__username", flat=True)) == {"alice", "boss"}


def test_broadcast_refuses_empty_text_and_a_group_with_nobody_active(admin_client: Client) -> None:
    empty = Group.objects.create(name="empty")
    token = csrf_token(admin_client.get(BROADCAST).content.decode())

    blank = admin_client.post(
        BROADCAST, {"csrfmiddlewaretoken": token, "text": " ", "group": "", "confirm": "yes"}
    )
    nobody = admin_client.post(
        BROADCAST,
        {"csrfmiddlewaretoken": token, "text": "hi", "group": str(empty.pk), "confirm": "yes"},
    )

    assert blank.status_code == nobody.status_code == 200
    assert "The text is empty" in blank.content.decode()
    assert "Nobody to send to" in nobody.content.decode()
    assert not Notification.objects.exists()


def test_broadcast_is_refused_to_staff_who_may_not_add_notifications() -> None:
    clerk = make_user("clerk", is_staff=True)
    client = Client(enforce_csrf_checks=True)
    client.force_login(clerk)
    assert client.get(BROADCAST).status_code == 403


def test_admin_add_form_still_creates_one_notification(admin_client: Client) -> None:
    alice = make_user("alice")
    token = csrf_token(admin_client.get(ADD).content.decode())

    saved = admin_client.post(
        ADD, {"csrfmiddlewaretoken": token, "user": str(alice.pk), "text": "Build green"}
    )

    assert saved.status_code == 302
    assert Notification.objects.get().text == "Build green"


@pytest.mark.parametrize(
    ("text", "error"),
    [("  \n  ", "This field is required."), ("y" * 26, "The text has 26 characters; at most 25")],
)
def test_admin_add_form_refuses_bad_text(
    admin_client: Client, settings: Any, text: str, error: str
) -> None:
    settings.NOTIFICATIONS_MAX_LENGTH = 25
    alice = make_user("alice")
    token = csrf_token(admin_client.get(ADD).content.decode())

    refused = admin_client.post(
        ADD, {"csrfmiddlewaretoken": token, "user": str(alice.pk), "text": text}
    )

    assert refused.status_code == 200
    assert error in refused.content.decode()
    assert not Notification.objects.exists()


def test_send_again_creates_new_notifications_and_leaves_the_old_ones(
    admin_client: Client,
) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    old = Notification.objects.create(user=alice, text="Reminder: timesheets")
    Notification.objects.filter(pk=old.pk).update(dispatched=True, dispatched_at=timezone.now())
    other = Notification.objects.create(user=bob, text="Bob's")
    token = csrf_token(admin_client.get(NOTIFICATIONS).content.decode())

    done = admin_client.post(
        NOTIFICATIONS,
        {
            "csrfmiddlewaretoken": token,
            "action": "send_again",
            "index": "0",
            "_selected_action": [str(old.pk)],
        },
        follow=True,
    )

    assert messages_of(done.content.decode()) == ["Sent 1 notification again."]
    new = Notification.objects.exclude(pk__in=[old.pk, other.pk]).get()
    assert (new.user_id, new.text, new.dispatched) == (alice.pk, "Reminder: timesheets", False)
    assert new.pk > old.pk
    old.refresh_from_db()
    assert old.dispatched
    assert Notification.objects.count() == 3


def test_notification_list_filters_by_typed_username_and_dispatched_and_searches(
    admin_client: Client,
) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    Notification.objects.create(user=alice, text="alpha one")
    Notification.objects.create(user=alice, text="alpha two")
    Notification.objects.create(user=bob, text="beta one")
    Notification.objects.filter(text="alpha two").update(dispatched=True)

    def shown(query: str) -> list[str]:
        page = admin_client.get(f"{NOTIFICATIONS}?{query}")
        assert page.status_code == 200
        return sorted(re.findall(r">((?:alpha|beta) \w+)</a>", page.content.decode()))

    assert shown("") == ["alpha one", "alpha two", "beta one"]
    assert shown("user=alice") == ["alpha one", "alpha two"]
    assert shown("user=alice&dispatched__exact=0") == ["alpha one"]
    assert shown("q=one") == ["alpha one", "beta one"]
    assert shown("user=nobody") == []
    page = admin_client.get(f"{NOTIFICATIONS}?user=alice&q=alpha").content.decode()
    # The username box keeps the search when it is submitted.
    assert '<input type="hidden" name="q" value="alpha">' in page
    # Labelled by the user model's USERNAME_FIELD (an e-mail-login model's box says so).
    assert 'placeholder="username" aria-label="Username"' in page


def test_notification_list_has_a_date_hierarchy(admin_client: Client) -> None:
    alice = make_user("alice")
    n = Notification.objects.create(user=alice, text="dated")
    Notification.objects.filter(pk=n.pk).update(created=timezone.now() - timedelta(days=400))
    page = admin_client.get(NOTIFICATIONS).content.decode()
    year = (timezone.now() - timedelta(days=400)).year
    assert f"?created__year={year}" in page


def test_broadcast_change_it_goes_back_to_the_filled_in_form(admin_client: Client) -> None:
    token = csrf_token(admin_client.get(BROADCAST).content.decode())
    confirm = admin_client.post(
        BROADCAST, {"csrfmiddlewaretoken": token, "text": "Draft", "group": ""}
    ).content.decode()
    assert 'id="broadcast-count"' in confirm

    back = admin_client.post(
        BROADCAST,
        {"csrfmiddlewaretoken": csrf_token(confirm), "text": "Draft", "group": "", "edit": "x"},
    ).content.decode()

    assert 'id="broadcast-count"' not in back
    assert "Draft</textarea>" in back
    assert not Notification.objects.exists()


def add_form(client: Client, **fields: str) -> Any:
    token = csrf_token(client.get(ADD).content.decode())
    return client.post(ADD, {"csrfmiddlewaretoken": token, **fields})


def test_admin_add_form_takes_a_link_and_a_level(admin_client: Client) -> None:
    alice = make_user("alice")
    page = admin_client.get(ADD).content.decode()
    assert 'name="url"' in page
    assert 'name="level"' in page

    saved = add_form(
        admin_client, user=str(alice.pk), text="Invoice", url="/invoices/7", level="warning"
    )

    assert saved.status_code == 302
    assert Notification.objects.values_list("url", "level").get() == ("/invoices/7", "warning")


def test_admin_add_form_defaults_to_no_link_and_info(admin_client: Client) -> None:
    alice = make_user("alice")
    add_form(admin_client, user=str(alice.pk), text="Plain", level="info")
    assert Notification.objects.values_list("url", "level").get() == ("", "info")


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"url": "javascript:alert(1)"}, "Links with the scheme javascript: are not allowed"),
        ({"url": "//evil.example/"}, "starts with //"),
        ({"url": "data:text/html,x"}, "scheme data:"),
        ({"level": "critical"}, "Select a valid choice"),
    ],
)
def test_admin_add_form_refuses_a_bad_link_or_level(
    admin_client: Client, fields: dict[str, str], error: str
) -> None:
    alice = make_user("alice")
    refused = add_form(admin_client, **{"user": str(alice.pk), "text": "x", **fields})
    assert refused.status_code == 200
    assert error in unescape(refused.content.decode())
    assert not Notification.objects.exists()


@pytest.mark.parametrize("user", ["abc", "1.5", "-1", "99999999999999999999999", "1 OR 1=1", "[]"])
def test_admin_add_form_with_a_user_that_is_not_an_id_gets_a_form_error(
    admin_client: Client, user: str
) -> None:
    refused = add_form(admin_client, user=user, text="Hello")
    assert refused.status_code == 200
    assert "Select a valid choice" in refused.content.decode()
    assert not Notification.objects.exists()


def test_notification_list_filters_by_read(admin_client: Client) -> None:
    alice = make_user("alice")
    Notification.objects.create(user=alice, text="alpha read", read_at=timezone.now())
    Notification.objects.create(user=alice, text="alpha unread")

    def shown(query: str) -> list[str]:
        page = admin_client.get(f"{NOTIFICATIONS}?{query}")
        assert page.status_code == 200
        return sorted(re.findall(r">(alpha \w+)</a>", page.content.decode()))

    assert shown("") == ["alpha read", "alpha unread"]
    assert shown("read=yes") == ["alpha read"]
    assert shown("read=no") == ["alpha unread"]
    assert shown("level=info&read=no") == ["alpha unread"]


def test_broadcast_sends_the_link_and_level_after_showing_them(admin_client: Client) -> None:
    make_user("alice")
    token = csrf_token(admin_client.get(BROADCAST).content.decode())
    fields = {"text": "Maintenance", "url": "/status", "level": "warning", "group": ""}

    confirm = admin_client.post(BROADCAST, {"csrfmiddlewaretoken": token, **fields})
    page = confirm.content.decode()
    assert "Level: <strong>Warning</strong>; link: <code>/status</code>" in page
    admin_client.post(
        BROADCAST, {"csrfmiddlewaretoken": csrf_token(page), **fields, "confirm": "yes"}
    )

    assert set(Notification.objects.values_list("url", "level")) == {("/status", "warning")}
    assert Notification.objects.count() == 2


def test_broadcast_refuses_a_javascript_link(admin_client: Client) -> None:
    make_user("alice")
    token = csrf_token(admin_client.get(BROADCAST).content.decode())
    refused = admin_client.post(
        BROADCAST,
        {"csrfmiddlewaretoken": token, "text": "x", "url": "javascript:alert(1)", "group": ""},
    )
    assert "scheme javascript: are not allowed" in unescape(refused.content.decode())
    assert 'id="broadcast-count"' not in refused.content.decode()


def test_user_action_sends_the_link_and_level(admin_client: Client) -> None:
    alice = make_user("alice")
    form = start_user_action(admin_client, [alice])
    assert 'name="url"' in form and 'name="level"' in form
    admin_client.post(
        USERS,
        {
            "csrfmiddlewaretoken": csrf_token(form),
            "action": "notify_users",
            "_selected_action": [str(alice.pk)],
            "select_across": "0",
            "text": "Your order shipped",
            "url": "https://shop.example/orders/1",
            "level": "success",
            "apply": "Send",
        },
    )
    assert list(Notification.objects.values_list("url", "level")) == [
        ("https://shop.example/orders/1", "success")
    ]


def test_user_action_refuses_a_data_link(admin_client: Client) -> None:
    alice = make_user("alice")
    form = start_user_action(admin_client, [alice])
    refused = admin_client.post(
        USERS,
        {
            "csrfmiddlewaretoken": csrf_token(form),
            "action": "notify_users",
            "_selected_action": [str(alice.pk)],
            "select_across": "0",
            "text": "x",
            "url": "data:text/html,x",
            "apply": "Send",
        },
    )
    assert "scheme data: are not allowed" in unescape(refused.content.decode())
    assert not Notification.objects.exists()


def deleted_ids() -> list[int]:
    from notifications.models import Change

    return sorted(
        pk
        for change in Change.objects.filter(kind="deleted")
        for ids in change.by_user().values()
        for pk in ids
    )


def test_admin_deletions_are_recorded_for_the_users_streams(admin_client: Client) -> None:
    from notifications.models import Change

    alice = make_user("alice")
    Change.objects.all().delete()
    one, two, three = (Notification.objects.create(user=alice, text=t) for t in "abc")

    page = admin_client.get(f"{NOTIFICATIONS}{one.pk}/delete/").content.decode()
    admin_client.post(
        f"{NOTIFICATIONS}{one.pk}/delete/", {"csrfmiddlewaretoken": csrf_token(page), "post": "yes"}
    )
    assert deleted_ids() == [one.pk]

    token = csrf_token(admin_client.get(NOTIFICATIONS).content.decode())
    admin_client.post(
        NOTIFICATIONS,
        {
            "csrfmiddlewaretoken": token,
            "action": "delete_selected",
            "_selected_action": [str(two.pk), str(three.pk)],
            "post": "yes",
        },
    )
    assert not Notification.objects.exists()
    assert deleted_ids() == [one.pk, two.pk, three.pk]
