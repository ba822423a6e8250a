from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import AbstractUser
from django.db import connection
from django.utils import timezone

from notifications import queries
from notifications.models import Notification

from .conftest import make_user
from .support import MIRROR

pytestmark = pytest.mark.django_db(transaction=True)


def test_claim_sets_dispatched_and_returns_only_what_it_claimed(alice: AbstractUser) -> None:
    first, second = (Notification.objects.create(user=alice, text=t) for t in ("one", "two"))
    assert [n.pk for n in queries.claim([first.pk])] == [first.pk]

    claimed = queries.claim([first.pk, second.pk])

    assert [(n.pk, n.text, n.user_id) for n in claimed] == [(second.pk, "two", alice.pk)]
    assert claimed[0].dispatched is True
    assert claimed[0].created == second.created
    second.refresh_from_db()
    assert second.dispatched and second.dispatched_at is not None


def test_claim_pending_takes_recent_undispatched_rows_of_the_given_users_only(
    alice: AbstractUser, bob: AbstractUser
) -> None:
    mine = Notification.objects.create(user=alice, text="recent")
    old = Notification.objects.create(user=alice, text="old")
    Notification.objects.filter(pk=old.pk).update(created=timezone.now() - timedelta(minutes=5))
    done = Notification.objects.create(user=alice, text="done", dispatched=True)
    theirs = Notification.objects.create(user=bob, text="bob's")

    claimed = queries.claim_pending([alice.pk], window=60, limit=100)

    assert [n.pk for n in claimed] == [mine.pk]
    assert Notification.objects.get(pk=old.pk).dispatched is False
    assert Notification.objects.get(pk=theirs.pk).dispatched is False
    assert done.pk not in {n.pk for n in claimed}


def test_claim_pending_filters_in_python_for_many_users(
    alice: AbstractUser, bob: AbstractUser
) -> None:
    mine = Notification.objects.create(user=alice, text="mine")
    Notification.objects.create(user=bob, text="bob's")
    many = [alice.pk, *range(10**6, 10**6 + 600)]

    claimed = queries.claim_pending(many, window=60, limit=100)

    assert [n.pk for n in claimed] == [mine.pk]


def test_claim_pending_honours_the_limit_oldest_first(alice: AbstractUser) -> None:
    rows = Notification.objects.bulk_create(
        [Notification(user=alice, text=str(i)) for i in range(5)]
    )
    ids = sorted(n.pk for n in rows)
    assert [n.pk for n in queries.claim_pending([alice.pk], window=60, limit=3)] == ids[:3]
    assert [n.pk for n in queries.claim_pending([alice.pk], window=60, limit=3)] == ids[3:]


def test_release_makes_a_claimed_row_claimable_again(alice: AbstractUser) -> None:
    n = Notification.objects.create(user=alice, text="x")
    queries.claim([n.pk])

    assert queries.release([n.pk]) == 1

    n.refresh_from_db()
    assert (n.dispatched, n.dispatched_at) == (False, None)
    assert [c.pk for c in queries.claim_pending([alice.pk], window=60, limit=10)] == [n.pk]


def test_history_is_newest_first_and_claims_what_it_shows(alice: AbstractUser) -> None:
    rows = [Notification.objects.create(user=alice, text=str(i)) for i in range(3)]

    shown, claimed = queries.history(alice.pk, limit=2)

    assert [n.pk for n in shown] == [rows[2].pk, rows[1].pk]
    assert all(n.dispatched for n in shown)
    assert sorted(n.pk for n in claimed) == [rows[1].pk, rows[2].pk]
    assert Notification.objects.get(pk=rows[0].pk).dispatched is False
    assert queries.claim_pending([alice.pk], window=60, limit=10)[0].pk == rows[0].pk


def test_replay_sends_the_newest_after_the_cursor_oldest_first_dispatched_or_not(
    alice: AbstractUser, bob: AbstractUser
) -> None:
    rows = [Notification.objects.create(user=alice, text=str(i)) for i in range(5)]
    Notification.objects.filter(pk=rows[3].pk).update(dispatched=True)
    Notification.objects.create(user=bob, text="bob's")

    replayed, claimed = queries.replay(alice.pk, after_id=rows[0].pk, limit=3)

    assert [n.pk for n in replayed] == [rows[2].pk, rows[3].pk, rows[4].pk]
    assert [n.pk for n in claimed] == [rows[2].pk, rows[4].pk]
    assert not Notification.objects.filter(user=alice, pk__gt=rows[1].pk, dispatched=False).exists()


def test_poll_query_reads_the_partial_index_not_the_users_history(
    alice: AbstractUser, bob: AbstractUser
) -> None:
    old = timezone.now() - timedelta(days=1)
    for user in (alice, bob):
        Notification.objects.bulk_create(
            [Notification(user=user, text="old", dispatched=True) for _ in range(3000)]
        )
    Notification.objects.update(created=old)
    Notification.objects.create(user=alice, text="new")
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")

    plan = queries.pending_query(timezone.now() - timedelta(seconds=60)).explain()

    assert "notification_undispatched" in plan, plan


def test_racing_claimers_never_claim_a_row_twice(alice: AbstractUser) -> None:
    Notification.objects.bulk_create([Notification(user=alice, text=str(i)) for i in range(2000)])
    since = timezone.now() - timedelta(seconds=60)
    claimers = 4
    barrier = threading.Barrier(claimers)
    won: list[list[int]] = [[] for _ in range(claimers)]
    attempted: list[list[int]] = [[] for _ in range(claimers)]
    errors: list[BaseException] = []

    def claimer(index: int) -> None:
        try:
            for _ in range(1000):
                barrier.wait(timeout=30)
                ids = [pk for pk, _ in queries.pending([alice.pk], since, limit=100)]
                # Nobody claims before everyone has read: all four go for the same rows.
                barrier.wait(timeout=30)
                if not ids:
                    return
                attempted[index].extend(ids)
                won[index].extend(n.pk for n in queries.claim(ids))
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()
        finally:
            connection.close()

    threads = [threading.Thread(target=claimer, args=(i,)) for i in range(claimers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert not errors, errors
    every_row = set(Notification.objects.values_list("pk", flat=True))
    assert all(set(a) == every_row for a in attempted)
    claimed = [pk for w in won for pk in w]
    assert len(claimed) == len(set(claimed)) == 2000
    assert not Notification.objects.filter(dispatched=False).exists()


def test_racing_claimers_never_claim_a_row_twice_with_two_users() -> None:
    users = [make_user(f"user{i}") for i in range(2)]
    for user in users:
        Notification.objects.bulk_create([Notification(user=user, text="x") for _ in range(300)])
    barrier = threading.Barrier(4)
    claimed: list[int] = []
    lock = threading.Lock()

    def claimer() -> None:
        try:
            barrier.wait(timeout=30)
            for _ in range(10_000):
                batch = queries.claim_pending([u.pk for u in users], window=60, limit=50)
                if not batch:
                    return
                with lock:
                    claimed.extend(n.pk for n in batch)
        finally:
            connection.close()

    threads = [threading.Thread(target=claimer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert len(claimed) == len(set(claimed)) == 600


@pytest.mark.django_db(transaction=True, databases=["default", MIRROR])
def test_queries_use_the_database_the_router_picks_for_notifications(
    mirror_database: str, alice: AbstractUser, settings: Any
) -> None:
    from django.db import connections
    from django.test.utils import CaptureQueriesContext

    rows = [Notification.objects.create(user=alice, text=str(i)) for i in range(3)]
    settings.DATABASE_ROUTERS = ["tests.support.NotificationsToMirror"]

    with (
        CaptureQueriesContext(connections["default"]) as on_default,
        CaptureQueriesContext(connections[mirror_database]) as on_mirror,
    ):
        claimed = queries.claim_pending([alice.pk], window=60, limit=1)
        assert queries.release([n.pk for n in claimed]) == 1
        shown, _ = queries.history(alice.pk, limit=2)
        replayed, _ = queries.replay(alice.pk, after_id=0, limit=10)

    assert [n.pk for n in claimed] == [rows[0].pk]
    assert [n.pk for n in shown] == [rows[2].pk, rows[1].pk]
    assert [n.pk for n in replayed] == [n.pk for n in rows]
    assert on_default.captured_queries == []
    assert any("UPDATE" in q["sql"] for q in on_mirror.captured_queries)
