from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import AbstractUser
from django.db import connection, transaction
from django.utils import timezone

from notifications import queries
from notifications.models import Notification

from .support import MIRROR, make_user

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
    # What the claim returns is the row as stored, every field (dispatched_at is set from the
    # value the UPDATE wrote, not read back).
    fields = [f.attname for f in Notification._meta.concrete_fields]
    assert [getattr(claimed[0], f) for f in fields] == [getattr(second, f) for f in fields]


def test_scan_reads_every_users_rows_above_the_cursor_in_id_order(
    alice: AbstractUser, bob: AbstractUser
) -> None:
    before = Notification.objects.create(user=alice, text="before")
    rows = [Notification.objects.create(user=u, text="x") for u in (alice, bob, alice)]

    everything = [(n.pk, n.user_id) for n in rows]
    assert queries.scan(before.pk, limit=10) == everything
    assert not queries.scan_has_more(before.pk, 10, everything)
    # Up to the cursor + 2, and the first row above: more may follow it.
    assert queries.scan(before.pk, limit=2) == everything
    assert queries.scan_has_more(before.pk, 2, everything)
    assert queries.scan(rows[-1].pk, limit=10) == []
    assert queries.newest_id() == rows[-1].pk


def test_a_scan_jumps_a_gap_in_the_ids_to_the_next_row(alice: AbstractUser) -> None:
    before = Notification.objects.create(user=alice, text="before")
    rows = [Notification.objects.create(user=alice, text=str(i)) for i in range(5)]
    Notification.objects.filter(pk__in=[n.pk for n in rows[1:4]]).delete()
    first, last = (rows[0].pk, alice.pk), (rows[4].pk, alice.pk)

    found = queries.scan(before.pk, limit=2)

    assert found == [first, last]  # every row up to the last returned
    assert queries.scan_has_more(before.pk, 2, found)
    assert queries.scan(rows[4].pk, limit=2) == []


def test_read_ranges_returns_the_rows_visible_in_them(alice: AbstractUser) -> None:
    rows = [Notification.objects.create(user=alice, text=str(i)) for i in range(6)]
    ids = [n.pk for n in rows]

    found = queries.read_ranges([(ids[0], ids[1]), (ids[3], ids[3]), (ids[5] + 1, ids[5] + 9)])

    assert found == [(ids[0], alice.pk), (ids[1], alice.pk), (ids[3], alice.pk)]


def test_deliverable_claims_what_is_undispatched_and_returns_every_row(
    alice: AbstractUser, bob: AbstractUser
) -> None:
    free = Notification.objects.create(user=alice, text="free")
    taken = Notification.objects.create(user=bob, text="taken", dispatched=True)

    rows, claimed = queries.deliverable([taken.pk, free.pk])

    assert [(n.pk, n.text, n.dispatched) for n in rows] == [
        (free.pk, "free", True),
        (taken.pk, "taken", True),
    ]
    assert claimed == {free.pk}


def test_catch_up_claims_the_recent_undispatched_rows_within_each_users_bounds(
    alice: AbstractUser, bob: AbstractUser
) -> None:
    mine = Notification.objects.create(user=alice, text="recent")
    old = Notification.objects.create(user=alice, text="old")
    Notification.objects.filter(pk=old.pk).update(created=timezone.now() - timedelta(minutes=5))
    Notification.objects.create(user=alice, text="done", dispatched=True)
    bobs = Notification.objects.create(user=bob, text="bob's")
    later = Notification.objects.create(user=alice, text="above alice's bound")
    since = timezone.now() - timedelta(seconds=60)

    caught = queries.catch_up({alice.pk: (0, later.pk - 1)}, since)

    assert [n.pk for n in caught] == [mine.pk]
    assert caught[0].text == "recent"
    assert not Notification.objects.get(pk=old.pk).dispatched
    assert not Notification.objects.get(pk=bobs.pk).dispatched
    assert not Notification.objects.get(pk=later.pk).dispatched
    assert queries.catch_up({alice.pk: (later.pk, later.pk)}, since) == []
    assert queries.catch_up({alice.pk: (later.pk - 1, later.pk)}, since) == [later]
    assert queries.catch_up({}, since) == []


def test_release_makes_a_claimed_row_claimable_again(alice: AbstractUser) -> None:
    n = Notification.objects.create(user=alice, text="x")
    queries.claim([n.pk])

    assert queries.release([n.pk]) == 1

    n.refresh_from_db()
    assert (n.dispatched, n.dispatched_at) == (False, None)
    assert [c.pk for c in queries.claim([n.pk])] == [n.pk]


def test_history_is_newest_first_up_to_a_settled_id_and_claims_what_it_shows(
    alice: AbstractUser, bob: AbstractUser
) -> None:
    rows = [Notification.objects.create(user=alice, text=str(i)) for i in range(3)]
    newest = Notification.objects.create(user=bob, text="bob's")

    shown, up_to = queries.history(alice.pk, limit=2)

    assert [n.pk for n in shown] == [rows[2].pk, rows[1].pk]
    assert up_to == newest.pk
    assert all(n.dispatched for n in shown)
    assert Notification.objects.get(pk=rows[0].pk).dispatched is False


def test_replay_sends_the_newest_after_the_cursor_up_to_a_bound_dispatched_or_not(
    alice: AbstractUser, bob: AbstractUser
) -> None:
    rows = [Notification.objects.create(user=alice, text=str(i)) for i in range(6)]
    Notification.objects.filter(pk=rows[3].pk).update(dispatched=True)
    Notification.objects.create(user=bob, text="bob's")

    replayed, claimed = queries.replay(alice.pk, after_id=rows[0].pk, up_to=rows[4].pk, limit=3)

    assert [n.pk for n in replayed] == [rows[2].pk, rows[3].pk, rows[4].pk]
    assert [n.pk for n in claimed] == [rows[2].pk, rows[4].pk]
    assert Notification.objects.get(pk=rows[1].pk).dispatched is False
    assert Notification.objects.get(pk=rows[5].pk).dispatched is False


def test_the_scan_reads_the_primary_key_not_the_table_also_with_stale_statistics(
    alice: AbstractUser, bob: AbstractUser
) -> None:
    # Statistics taken while the table was small, then a large insert: the planner still
    # believes the table small (autovacuum analyzes it again later).
    Notification.objects.bulk_create([Notification(user=alice, text="x") for _ in range(10)])
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    for user in (alice, bob):
        Notification.objects.bulk_create(
            [Notification(user=user, text="burst", dispatched=True) for _ in range(20_000)]
        )
    newest = Notification.objects.order_by("-pk").first()
    assert newest is not None
    sql, params = queries.scan_sql(newest.pk - 30_000, queries.SCAN_LIMIT)

    with connection.cursor() as cursor:
        cursor.execute(
            ("EXPLAIN QUERY PLAN " if connection.vendor == "sqlite" else "EXPLAIN ") + sql, params
        )
        plan = "\n".join(str(row[-1]) for row in cursor.fetchall())

    if connection.vendor == "sqlite":
        assert plan.count("USING INTEGER PRIMARY KEY") == 2, plan
    else:
        assert plan.count("Index Scan using notifications_notification_pkey") == 2, plan
    assert "Seq Scan" not in plan and "SCAN notifications_notification" not in plan, plan


@pytest.mark.postgresql
def test_writers_are_the_transactions_writing_to_the_table(alice: AbstractUser) -> None:
    assert queries.writers() == frozenset()
    opened, finish = threading.Event(), threading.Event()

    def write() -> None:
        try:
            with transaction.atomic():
                Notification.objects.create(user=alice, text="open")
                opened.set()
                finish.wait(30)
        finally:
            connection.close()

    thread = threading.Thread(target=write)
    thread.start()
    try:
        assert opened.wait(10)
        assert len(queries.writers()) == 1
        # Not settled while it writes; settled (within its timeout) once it commits.
        assert queries.settled_newest_id(timeout=0.05) == queries.newest_id()
    finally:
        finish.set()
        thread.join(10)
    assert queries.writers() == frozenset()


@pytest.mark.postgresql
def test_settled_newest_id_waits_for_a_transaction_that_can_still_commit_a_lower_id(
    alice: AbstractUser,
) -> None:
    inserted, finish = threading.Event(), threading.Event()
    low: list[int] = []

    def write() -> None:
        try:
            with transaction.atomic():
                low.append(Notification.objects.create(user=alice, text="late").pk)
                inserted.set()
                finish.wait(30)
        finally:
            connection.close()

    thread = threading.Thread(target=write)
    thread.start()
    assert inserted.wait(10)
    high = Notification.objects.create(user=alice, text="early").pk
    assert low[0] < high
    timer = threading.Timer(0.2, finish.set)
    timer.start()
    started = time.monotonic()

    settled = queries.settled_newest_id(timeout=10)

    waited = time.monotonic() - started
    thread.join(10)
    assert settled == high
    assert 0.15 < waited < 5
    assert Notification.objects.filter(pk=low[0]).exists()


def test_racing_claimers_never_claim_a_row_twice(alice: AbstractUser) -> None:
    Notification.objects.bulk_create([Notification(user=alice, text=str(i)) for i in range(2000)])
    claimers = 4
    barrier = threading.Barrier(claimers)
    won: list[list[int]] = [[] for _ in range(claimers)]
    attempted: list[list[int]] = [[] for _ in range(claimers)]
    errors: list[BaseException] = []

    def claimer(index: int) -> None:
        try:
            for _ in range(1000):
                barrier.wait(timeout=30)
                ids = list(
                    Notification.objects.filter(dispatched=False)
                    .order_by("pk")
                    .values_list("pk", flat=True)[:100]
                )
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
            since = timezone.now() - timedelta(seconds=60)
            for _ in range(10_000):
                batch = queries.catch_up({u.pk: (0, 10**9) for u in users}, since)
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
        claimed = queries.claim([rows[0].pk])
        assert queries.release([n.pk for n in claimed]) == 1
        assert queries.scan(rows[0].pk - 1, limit=10) == [(n.pk, alice.pk) for n in rows]
        shown, _ = queries.history(alice.pk, limit=2)
        replayed, _ = queries.replay(alice.pk, after_id=0, up_to=rows[-1].pk, limit=10)
        caught = queries.catch_up({alice.pk: (0, rows[-1].pk)}, timezone.now() - timedelta(hours=1))

    assert [n.pk for n in claimed] == [rows[0].pk]
    assert caught == []
    assert [n.pk for n in shown] == [rows[2].pk, rows[1].pk]
    assert [n.pk for n in replayed] == [n.pk for n in rows]
    assert on_default.captured_queries == []
    assert any("UPDATE" in q["sql"] for q in on_mirror.captured_queries)
