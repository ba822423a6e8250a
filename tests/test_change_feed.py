"""hub.change_feed: each change read once, a late one (committed after a higher id) too."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from django.contrib.auth.models import AbstractUser
from django.db import OperationalError, connection
from django.utils import timezone

from notifications import inbox
from notifications.hub import change_feed
from notifications.hub.change_events import ChangeEvent
from notifications.hub.change_feed import ChangeFeed
from notifications.models import Change, Notification

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("empty_change_log")]


def make(user: AbstractUser, count: int) -> list[Notification]:
    return [Notification.objects.create(user=user, text=str(i)) for i in range(count)]


def test_the_first_read_starts_at_the_newest_change(alice: AbstractUser) -> None:
    rows = make(alice, 3)
    inbox.mark_read(alice.pk, [rows[0].pk])
    feed = ChangeFeed()

    assert feed.read({alice.pk}).events == {}

    inbox.mark_read(alice.pk, [rows[1].pk])
    gone = rows[2].pk
    rows[2].delete()
    assert feed.read({alice.pk}).events == {
        alice.pk: [
            ChangeEvent("read", {"ids": [rows[1].pk], "unread": 0}),
            ChangeEvent("deleted", {"ids": [gone], "unread": 0}),
        ]
    }
    assert feed.read({alice.pk}).events == {}


def test_only_users_with_streams_get_events(alice: AbstractUser, bob: AbstractUser) -> None:
    feed = ChangeFeed()
    feed.read({alice.pk})
    (a,) = make(alice, 1)
    (b,) = make(bob, 1)
    inbox.mark_all_read(alice.pk)
    inbox.mark_all_read(bob.pk)

    assert feed.read({alice.pk}).events == {
        alice.pk: [ChangeEvent("read", {"all": True, "newest": a.pk, "unread": 0})]
    }


def test_a_backlog_beyond_the_scan_limit_is_read_in_turns(
    alice: AbstractUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(change_feed, "SCAN_LIMIT", 2)
    rows = make(alice, 3)
    feed = ChangeFeed()
    feed.read({alice.pk})
    for row in rows:
        inbox.mark_read(alice.pk, [row.pk])

    first = feed.read({alice.pk})
    second = feed.read({alice.pk})

    assert first.more and not second.more
    seen = [i for r in (first, second) for e in r.events[alice.pk] for i in e.data["ids"]]
    assert seen == [row.pk for row in rows]


def test_the_change_log_is_pruned_after_the_retention(alice: AbstractUser, settings: Any) -> None:
    settings.NOTIFICATIONS_CHANGE_RETENTION = 30
    (row,) = make(alice, 1)
    row.delete()
    Change.objects.update(created=timezone.now() - timedelta(seconds=31))
    ChangeFeed().read({alice.pk})
    assert not Change.objects.exists()


def test_a_prune_that_fails_loses_no_change(
    alice: AbstractUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    (row,) = make(alice, 1)
    feed = ChangeFeed()
    feed.read({alice.pk})
    inbox.mark_read(alice.pk, [row.pk])

    def locked() -> int:
        raise OperationalError("database is locked")

    monkeypatch.setattr(change_feed.changes, "prune", locked)
    monkeypatch.setattr(feed, "_next_prune", 0.0)
    with pytest.raises(OperationalError):
        feed.read({alice.pk})
    read = feed.read({alice.pk})

    assert [e.data["ids"] for e in read.events[alice.pk]] == [[row.pk]]


@contextlib.contextmanager
def other_connection() -> Iterator[psycopg.Connection[Any]]:
    """A second connection to the test database, in a transaction of its own."""
    params = connection.get_connection_params()
    for django_only in ("context", "cursor_factory", "prepare_threshold"):
        params.pop(django_only, None)
    with psycopg.connect(**params) as other:
        yield other


def insert_change(other: psycopg.Connection[Any], user: int, ids: list[int]) -> int:
    row = other.execute(
        f"INSERT INTO {Change._meta.db_table} (kind, ids) VALUES ('read', %s) RETURNING id",
        [psycopg.types.json.Jsonb({str(user): ids})],
    ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.postgresql
def test_a_change_committed_after_a_higher_id_is_still_read(alice: AbstractUser) -> None:
    rows = make(alice, 2)
    feed = ChangeFeed()
    feed.read({alice.pk})
    with other_connection() as other:
        late = insert_change(other, alice.pk, [rows[0].pk])
        inbox.mark_read(alice.pk, [rows[1].pk])

        first = feed.read({alice.pk})
        assert [e.data["ids"] for e in first.events[alice.pk]] == [[rows[1].pk]]
        assert feed.horizon is not None
        assert [hole.high for hole in feed.horizon.holes] == [late]
        assert feed.read({alice.pk}).events == {}

        other.commit()

    second = feed.read({alice.pk})
    assert [e.data["ids"] for e in second.events[alice.pk]] == [[rows[0].pk]]
    assert feed.horizon is not None and feed.horizon.holes == []


@pytest.mark.postgresql
def test_a_gap_whose_transaction_rolled_back_is_dropped(alice: AbstractUser) -> None:
    rows = make(alice, 2)
    feed = ChangeFeed()
    feed.read({alice.pk})
    with other_connection() as other:
        insert_change(other, alice.pk, [rows[0].pk])
        inbox.mark_read(alice.pk, [rows[1].pk])
        feed.read({alice.pk})
        assert feed.horizon is not None and len(feed.horizon.holes) == 1
        other.rollback()

    assert feed.read({alice.pk}).events == {}
    assert feed.horizon is not None and feed.horizon.holes == []


@pytest.mark.postgresql
def test_a_change_still_to_commit_below_the_start_is_read(alice: AbstractUser) -> None:
    rows = make(alice, 2)
    with other_connection() as other:
        late = insert_change(other, alice.pk, [rows[0].pk])
        inbox.mark_read(alice.pk, [rows[1].pk])
        feed = ChangeFeed()
        # The newest change at start is the committed one; the one below it may still come.
        assert feed.read({alice.pk}).events == {}
        assert feed.horizon is not None
        assert any(hole.low <= late <= hole.high for hole in feed.horizon.holes)
        other.commit()

    assert [e.data["ids"] for e in feed.read({alice.pk}).events[alice.pk]] == [[rows[0].pk]]
    assert feed.horizon is not None and feed.horizon.holes == []
