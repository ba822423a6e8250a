"""manage.py purge_notifications: what it deletes, in batches, idempotently."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from notifications.management.commands.purge_notifications import parse_age
from notifications.models import Notification

from .support import make_user

pytestmark = pytest.mark.django_db


def aged(user: object, text: str, *, days: float, dispatched: bool) -> Notification:
    n = Notification.objects.create(user=user, text=text)
    Notification.objects.filter(pk=n.pk).update(
        created=timezone.now() - timedelta(days=days), dispatched=dispatched
    )
    return n


def purge(*args: str) -> str:
    out = StringIO()
    call_command("purge_notifications", *args, stdout=out)
    return out.getvalue()


def remaining() -> list[str]:
    return sorted(Notification.objects.values_list("text", flat=True))


@pytest.fixture
def rows() -> None:
    alice = make_user("alice")
    aged(alice, "old sent", days=40, dispatched=True)
    aged(alice, "old unsent", days=40, dispatched=False)
    aged(alice, "new sent", days=5, dispatched=True)
    aged(alice, "new unsent", days=5, dispatched=False)


@pytest.mark.usefixtures("rows")
def test_purge_deletes_old_dispatched_only_and_again_deletes_nothing() -> None:
    first = purge("--older-than", "30d")
    assert first.startswith("Deleted 1 dispatched notifications created before ")
    assert remaining() == ["new sent", "new unsent", "old unsent"]

    second = purge("--older-than", "30d")
    assert second.startswith("Deleted 0 dispatched notifications")
    assert remaining() == ["new sent", "new unsent", "old unsent"]


@pytest.mark.usefixtures("rows")
def test_purge_include_undispatched() -> None:
    out = purge("--older-than", "720h", "--include-undispatched")
    assert out.startswith("Deleted 2 notifications created before ")
    assert remaining() == ["new sent", "new unsent"]


@pytest.mark.usefixtures("rows")
def test_purge_dry_run_deletes_nothing() -> None:
    out = purge("--older-than", "4d", "--dry-run")
    assert out.startswith("Would delete 2 dispatched notifications created before ")
    assert len(remaining()) == 4


def test_purge_deletes_in_batches_and_keeps_what_does_not_match() -> None:
    alice = make_user("alice")
    for i in range(25):
        aged(alice, f"old {i}", days=2, dispatched=i % 5 != 0)
    aged(alice, "recent", days=0, dispatched=True)

    out = purge("--older-than", "90m", "--batch-size", "7")

    # 20 to delete, 7 per batch.
    assert "Deleted 20 dispatched notifications" in out
    assert out.rstrip().endswith("(3 batches).")
    assert remaining() == sorted(["old 0", "old 5", "old 10", "old 15", "old 20", "recent"])


@pytest.mark.parametrize("bad", ["30", "d", "30s", "-3d", "0d", "1.5h", ""])
def test_purge_refuses_an_unclear_age(bad: str) -> None:
    with pytest.raises(CommandError, match="--older-than takes a number and a unit"):
        purge(f"--older-than={bad}")


def test_parse_age_units() -> None:
    assert parse_age("30d") == timedelta(days=30)
    assert parse_age("12h") == timedelta(hours=12)
    assert parse_age("90m") == timedelta(minutes=90)


@pytest.mark.parametrize("huge", ["99999999999d", "1000000d"])
def test_purge_refuses_an_age_beyond_the_calendar(huge: str) -> None:
    with pytest.raises(CommandError, match="before the year 1"):
        purge(f"--older-than={huge}")


def test_purge_records_what_it_deleted_for_the_users_streams() -> None:
    from notifications.models import Change

    alice, bob = make_user("alice"), make_user("bob")
    Change.objects.all().delete()
    old = [aged(u, "old", days=40, dispatched=True) for u in (alice, bob, alice)]
    aged(alice, "recent", days=1, dispatched=True)

    purge("--older-than", "30d", "--batch-size", "2")

    recorded: dict[int, list[int]] = {}
    for change in Change.objects.filter(kind="deleted"):
        for user, ids in change.by_user().items():
            recorded.setdefault(user, []).extend(ids)
    assert {user: sorted(ids) for user, ids in recorded.items()} == {
        alice.pk: [old[0].pk, old[2].pk],
        bob.pk: [old[1].pk],
    }
