"""The Python API for sending: send_notification, send_bulk, validate_text."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.contrib.auth.models import AbstractUser
from django.core.exceptions import ValidationError
from django.db import IntegrityError

from notifications import services
from notifications.models import Notification

from .support import MIRROR, make_user

pytestmark = pytest.mark.django_db


def make_users(count: int, prefix: str = "user", **extra: Any) -> list[AbstractUser]:
    """Create `count` users in bulk: no password hashing, one INSERT per batch."""
    model = get_user_model()
    unusable = make_password(None)
    users = [model(username=f"{prefix}{i:06d}", password=unusable, **extra) for i in range(count)]
    return model._default_manager.bulk_create(users, batch_size=5000)  # type: ignore[return-value]


def test_send_notification_creates_and_returns_the_row() -> None:
    alice = make_user("alice")
    sent = services.send_notification(alice, "Your export is ready")

    assert sent.pk is not None
    stored = Notification.objects.get(pk=sent.pk)
    assert (stored.user_id, stored.text, stored.dispatched) == (
        alice.pk,
        "Your export is ready",
        False,
    )


@pytest.mark.parametrize("text", ["", "   ", "\n\t \r\n"])
def test_send_refuses_empty_or_whitespace_text(text: str) -> None:
    alice = make_user("alice")
    with pytest.raises(ValidationError, match="empty"):
        services.send_notification(alice, text)
    with pytest.raises(ValidationError, match="empty"):
        services.send_bulk([alice], text)
    assert not Notification.objects.exists()


def test_send_refuses_text_over_the_maximum_length_with_the_limit_in_the_message(
    settings: Any,
) -> None:
    settings.NOTIFICATIONS_MAX_LENGTH = 20
    alice = make_user("alice")

    services.send_notification(alice, "x" * 20)
    with pytest.raises(ValidationError) as caught:
        services.send_bulk([alice], "x" * 21)

    assert caught.value.messages == [
        "The text has 21 characters; at most 20 are allowed (NOTIFICATIONS_MAX_LENGTH)."
    ]
    assert Notification.objects.count() == 1


def test_the_default_maximum_is_10000_characters() -> None:
    alice = make_user("alice")
    services.send_notification(alice, "é" * 10_000)
    with pytest.raises(ValidationError, match="10,001 characters; at most 10,000"):
        services.send_notification(alice, "é" * 10_001)


def test_send_bulk_dedupes_and_sends_to_whom_it_is_given_active_or_not() -> None:
    alice, bob = make_user("alice"), make_user("bob", is_active=False)
    make_user("carol")

    created = services.send_bulk([alice, bob, alice], "Maintenance at 18:00")

    assert [n.user_id for n in created] == [alice.pk, bob.pk]
    assert all(n.pk is not None for n in created)
    assert sorted(Notification.objects.values_list("user_id", flat=True)) == sorted(
        [alice.pk, bob.pk]
    )


def test_send_bulk_takes_a_queryset() -> None:
    make_users(30, prefix="staff", is_staff=True)
    make_users(5, prefix="other")
    model = get_user_model()

    created = services.send_bulk(model.objects.filter(is_staff=True), "Staff meeting")

    assert len(created) == 30
    assert set(Notification.objects.values_list("user__username", flat=True)) == {
        f"staff{i:06d}" for i in range(30)
    }


def test_send_bulk_to_nobody_creates_nothing() -> None:
    assert services.send_bulk(get_user_model().objects.none(), "hello") == []
    assert services.send_bulk([], "hello") == []
    assert not Notification.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_send_bulk_is_all_or_nothing() -> None:
    users: list[Any] = make_users(5000)
    # A user that does not exist, in the third batch: its foreign key fails at the latest on
    # commit, after two batches were inserted.
    users.insert(4500, get_user_model()(pk=10**9, username="ghost"))

    with pytest.raises(IntegrityError):
        services.send_bulk(users, "Half of this must not stay")

    assert not Notification.objects.exists()


def test_send_bulk_wakes_the_streams_once_after_commit(
    django_capture_on_commit_callbacks: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    woken = []
    monkeypatch.setattr("notifications.hub.registry.wake_local_hubs", lambda: woken.append(1))
    users = make_users(4500)

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        services.send_bulk(users, "hello")

    assert len(callbacks) == 1
    assert woken == [1]


@pytest.mark.django_db(transaction=True)
def test_send_bulk_to_10000_users_is_one_quick_transaction(
    capsys: pytest.CaptureFixture[str],
) -> None:
    make_users(10_000)
    started = time.perf_counter()

    created = services.send_bulk(get_user_model().objects.all(), "To everyone")

    elapsed = time.perf_counter() - started
    assert len(created) == 10_000
    assert len({n.pk for n in created}) == 10_000
    assert Notification.objects.values("user").distinct().count() == 10_000
    # Far below the 20 s busy timeout for which SQLite's other writers (the streams' claims)
    # would wait for this one transaction.
    assert elapsed < 10, f"10,000 rows took {elapsed:.1f}s"
    with capsys.disabled():
        print(f"\nsend_bulk: 10,000 notifications in {elapsed:.2f}s")


def test_send_refuses_a_nul_character_on_every_database() -> None:
    alice = make_user("alice")
    with pytest.raises(ValidationError, match="NUL"):
        services.send_notification(alice, "a\x00b")
    with pytest.raises(ValidationError, match="NUL"):
        services.send_bulk([alice], "a\x00b")
    assert not Notification.objects.exists()


@pytest.mark.django_db(transaction=True, databases=["default", MIRROR])
def test_send_bulk_writes_to_the_database_the_router_picks_for_notifications(
    mirror_database: str, alice: AbstractUser, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django.db import connections
    from django.test.utils import CaptureQueriesContext

    woken = []
    monkeypatch.setattr("notifications.hub.registry.wake_local_hubs", lambda: woken.append(1))
    settings.DATABASE_ROUTERS = ["tests.support.NotificationsToMirror"]

    with (
        CaptureQueriesContext(connections["default"]) as on_default,
        CaptureQueriesContext(connections[mirror_database]) as on_mirror,
    ):
        [sent] = services.send_bulk([alice], "routed")

    assert on_default.captured_queries == []
    assert any("INSERT" in q["sql"] for q in on_mirror.captured_queries)
    assert Notification.objects.using("default").get(pk=sent.pk).text == "routed"
    assert woken == [1]


def test_send_takes_a_link_and_a_level() -> None:
    alice, bob = make_user("alice"), make_user("bob")
    one = services.send_notification(alice, "Invoice", url="https://example.com/i/7", level="error")
    many = services.send_bulk([alice, bob], "Release", url="/releases/3", level="success")

    assert Notification.objects.values_list("url", "level").get(pk=one.pk) == (
        "https://example.com/i/7",
        "error",
    )
    assert {(n.url, n.level) for n in Notification.objects.filter(pk__in=[n.pk for n in many])} == {
        ("/releases/3", "success")
    }


def test_send_defaults_to_no_link_and_info() -> None:
    alice = make_user("alice")
    sent = services.send_notification(alice, "Plain")
    services.send_bulk([alice], "Plain too", url=None)
    assert sent.url == "" and sent.level == "info"
    assert set(Notification.objects.values_list("url", "level")) == {("", "info")}


@pytest.mark.parametrize(
    "url",
    ["javascript:alert(1)", " javascript:alert(1)", "java\tscript:x", "data:,x", "//evil.example"],
)
def test_send_refuses_a_link_that_is_not_http_or_a_site_path(url: str) -> None:
    alice = make_user("alice")
    with pytest.raises(ValidationError):
        services.send_notification(alice, "x", url=url)
    with pytest.raises(ValidationError):
        services.send_bulk([alice], "x", url=url)
    assert not Notification.objects.exists()


def test_send_refuses_an_unknown_level() -> None:
    alice = make_user("alice")
    with pytest.raises(ValidationError, match="info, success, warning, error"):
        services.send_notification(alice, "x", level="critical")
    with pytest.raises(ValidationError, match="info, success, warning, error"):
        services.send_bulk([alice], "x", level="")
    assert not Notification.objects.exists()


def test_resend_keeps_the_link_and_the_level() -> None:
    alice = make_user("alice")
    old = services.send_notification(alice, "Again", url="/a", level="warning")
    (new,) = services.resend([old])
    assert (new.text, new.url, new.level) == ("Again", "/a", "warning")


def test_the_model_refuses_a_javascript_link_on_full_clean() -> None:
    alice = make_user("alice")
    with pytest.raises(ValidationError, match="scheme javascript"):
        Notification(user=alice, text="x", url="javascript:alert(1)").full_clean()
    with pytest.raises(ValidationError, match="level"):
        Notification(user=alice, text="x", level="nope").full_clean()
