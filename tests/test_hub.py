"""The hub: claims, fan-out, release, the worker, session checks, admission, authentication,
replay, change watchers and GC freezing, driven directly in the test's event loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import AbstractUser
from django.contrib.sessions.models import Session
from django.utils import timezone

from notifications.hub import Hub, StreamRefused
from notifications.models import Notification
from notifications.stream import notification_stream

from .support import MIRROR, OpenTransaction, ids_in, next_chunk, session_for, wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fast_poll")]


# Claims and fan-out: the poll claims for every user with a stream, and only for them.


async def test_claimed_rows_go_to_every_stream_of_their_user_and_no_other(
    hub: Hub, alice: AbstractUser, alice_session: str, bob: AbstractUser, bob_session: str
) -> None:
    a1, a2, b = (
        hub.subscribe(alice.pk, alice_session),
        hub.subscribe(alice.pk, alice_session),
        hub.subscribe(bob.pk, bob_session),
    )
    n = await Notification.objects.acreate(user=alice, text="for alice")
    m = await Notification.objects.acreate(user=bob, text="for bob")

    assert [x.pk for x in await asyncio.wait_for(a1.next_batch(), 10) or []] == [n.pk]
    assert [x.pk for x in await asyncio.wait_for(a2.next_batch(), 10) or []] == [n.pk]
    assert [x.pk for x in await asyncio.wait_for(b.next_batch(), 10) or []] == [m.pk]
    for s in (a1, a2, b):
        hub.unsubscribe(s)


async def test_a_pass_asks_the_quiet_streams_for_a_keepalive_and_no_other(
    hub: Hub,
    alice: AbstractUser,
    alice_session: str,
    bob: AbstractUser,
    bob_session: str,
    settings: Any,
) -> None:
    settings.NOTIFICATIONS_KEEPALIVE = 0.2  # a pass every 0.05 s
    quiet, busy = hub.subscribe(alice.pk, alice_session), hub.subscribe(bob.pk, bob_session)
    quiet.quiet_since -= 60
    busy.quiet_since += 60  # as if it had just sent something, for a minute to come

    assert await asyncio.wait_for(quiet.next_batch(), 10) == []  # the keepalive

    # The same pass judged both streams: the busy one was not asked; and having taken its
    # keepalive, the quiet one waits again.
    waiting = [asyncio.ensure_future(s.next_batch()) for s in (busy, quiet)]
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiting)
    for w in waiting:
        w.cancel()
    for s in (quiet, busy):
        hub.unsubscribe(s)


async def test_rows_claimed_for_a_stream_that_closed_unsent_are_released(
    hub: Hub, alice: AbstractUser, alice_session: str
) -> None:
    subscription = hub.subscribe(alice.pk, alice_session)
    n = await Notification.objects.acreate(user=alice, text="x")
    await wait_until(lambda: hub.stats.claimed == 1, what="the claim")

    hub.unsubscribe(subscription)

    async def undispatched() -> bool:
        return not (await Notification.objects.aget(pk=n.pk)).dispatched

    await wait_until(lambda: hub.stats.released == 1, what="the release")
    assert await undispatched()


async def test_nothing_is_claimed_for_a_user_without_a_stream(
    hub: Hub, alice: AbstractUser, alice_session: str, bob: AbstractUser, bob_session: str
) -> None:
    subscription = hub.subscribe(bob.pk, bob_session)
    n = await Notification.objects.acreate(user=alice, text="x")
    ticks = hub.stats.ticks
    await wait_until(lambda: hub.stats.ticks >= ticks + 3, what="three polls")

    assert not (await Notification.objects.aget(pk=n.pk)).dispatched
    hub.unsubscribe(subscription)


async def test_rows_beyond_a_hand_out_batch_follow_at_the_next_polls_in_order(
    hub: Hub, alice: AbstractUser, alice_session: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from notifications.hub import core

    monkeypatch.setattr(core, "HAND_BATCH", 2)
    scans, held = threading.Event(), threading.Event()
    scans.set()
    real_read = core._read

    def gated_read(*args: Any, **kwargs: Any) -> Any:
        if not scans.is_set():
            held.set()
        scans.wait(timeout=10)
        return real_read(*args, **kwargs)

    monkeypatch.setattr(core, "_read", gated_read)
    await _a_row_below_the_start(alice)
    stream = notification_stream(hub, hub.subscribe(alice.pk, alice_session))
    await next_chunk(stream)
    # Five rows and a read change, committed together while no scan runs: the next poll
    # reads them all, the change included.
    scans.clear()
    await wait_until(held.is_set, what="a poll that waits to scan")
    rows = await sync_to_async(send_bulk_and_mark_the_first_read)(alice, 5)
    scans.set()

    seen: list[int] = []
    chunks = []
    while len(seen) < 5:
        chunk = await next_chunk(stream)
        chunks.append(chunk)
        seen += ids_in(chunk)
    assert seen == rows
    assert hub.stats.claimed == 5
    # The read event comes once every row is handed out, after the last of them.
    events = "".join(chunks)
    if "event: read" not in events:
        events += await next_chunk(stream)
    assert f'event: read\ndata: {{"ids": [{rows[0]}], "unread": 4}}' in events
    assert events.index("event: read") > events.index(f"id: {rows[-1]}\n")
    await stream.aclose()


async def test_the_next_batch_is_claimed_before_more_rows_are_read(
    hub: Hub, alice: AbstractUser, alice_session: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its claim then runs while the streams write the last batch (not after: the answer to
    a read waits for them)."""
    from notifications.hub import core

    monkeypatch.setattr(core, "HAND_BATCH", 2)
    jobs: list[str] = []
    real_read, real_fetch = core._read, core._fetch

    def read(*args: Any, **kwargs: Any) -> Any:
        found = real_read(*args, **kwargs)
        jobs.append(f"read {len(found.rows)}")
        return found

    def fetch(*args: Any, **kwargs: Any) -> Any:
        handed = real_fetch(*args, **kwargs)
        jobs.append(f"fetch {len(handed.rows)}")
        return handed

    monkeypatch.setattr(core, "_read", read)
    monkeypatch.setattr(core, "_fetch", fetch)
    await _a_row_below_the_start(alice)
    stream = notification_stream(hub, hub.subscribe(alice.pk, alice_session))
    await next_chunk(stream)
    rows = await sync_to_async(send_bulk_and_mark_the_first_read)(alice, 5)

    seen: list[int] = []
    while len(seen) < 5:
        seen += ids_in(await next_chunk(stream))
    assert seen == rows
    first = jobs.index("read 5")
    assert jobs[first + 1 : first + 4] == ["fetch 2", "fetch 2", "fetch 1"]
    await stream.aclose()


async def _a_row_below_the_start(user: AbstractUser) -> None:
    """Keep the next rows' ids within one scan of where the hub's cursor starts.

    The cursor starts at the newest row; in an emptied table (after another test) the ids go
    on from where they were, and a scan reads ids up to the cursor + SCAN_LIMIT and the first
    row above: the first of the new rows would come in a poll of its own.
    """
    from django.utils import timezone

    # Dispatched and read: no stream sends it, no unread count counts it.
    await Notification.objects.acreate(
        user=user, text="before", dispatched=True, read_at=timezone.now()
    )


def send_bulk_and_mark_the_first_read(user: AbstractUser, count: int) -> list[int]:
    """Insert `count` rows for the user and mark the first read, in one transaction."""
    from django.db import transaction

    from notifications import inbox
    from notifications.hub import notifications_created

    with transaction.atomic():
        created = Notification.objects.bulk_create(
            [Notification(user=user, text=str(i)) for i in range(count)]
        )
        inbox.mark_read(user.pk, [created[0].pk])
        notifications_created()
    return [n.pk for n in created]


async def test_one_query_per_poll_however_many_streams(hub: Hub, settings: object) -> None:
    settings.NOTIFICATIONS_SESSION_CHECK_INTERVAL = 3600  # type: ignore[attr-defined]
    for user_id in range(1, 201):
        hub.subscribe(user_id, f"key{user_id}")
    await wait_until(lambda: hub.stats.ticks >= 2, what="the poll to start")
    ticks = hub.stats.ticks

    await wait_until(lambda: hub.stats.ticks >= ticks + 5, what="five polls")

    assert hub.stats.last_tick_queries == 1
    await hub.aclose()


async def test_a_database_error_delays_delivery_without_ending_the_stream(
    hub: Hub, alice: AbstractUser, alice_session: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django.db import OperationalError

    from notifications import queries

    real = queries.scan
    failures = 0

    def flaky(*args: object, **kwargs: object) -> object:
        nonlocal failures
        if failures < 3:
            failures += 1
            raise OperationalError("database is locked (simulated)")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(queries, "scan", flaky)
    stream = notification_stream(hub, hub.subscribe(alice.pk, alice_session))
    await next_chunk(stream)
    n = await Notification.objects.acreate(user=alice, text="late")

    assert ids_in(await next_chunk(stream)) == [n.pk]
    assert hub.stats.errors == 3
    await stream.aclose()


# The cursor: every new row read once; catch-up for a user's first stream; rows held back.


async def test_rows_for_users_without_a_stream_are_read_once_and_cost_nothing_more(
    hub: Hub, alice: AbstractUser, alice_session: str, bob: AbstractUser
) -> None:
    stream = hub.subscribe(alice.pk, alice_session)
    await wait_until(lambda: hub.stats.ticks >= 1, what="the first poll")
    read = hub.stats.rows_read
    await Notification.objects.abulk_create([Notification(user=bob, text="x") for _ in range(300)])
    mine = await Notification.objects.acreate(user=alice, text="mine")

    assert [n.pk for n in await asyncio.wait_for(stream.next_batch(), 10) or []] == [mine.pk]
    ticks = hub.stats.ticks
    await wait_until(lambda: hub.stats.ticks >= ticks + 3, what="three more polls")

    assert hub.stats.rows_read - read == 301
    assert hub.stats.claimed == 1
    assert not await Notification.objects.filter(user=bob, dispatched=True).aexists()
    hub.unsubscribe(stream)


async def test_a_users_first_stream_gets_what_was_sent_shortly_before_it_opened(
    hub: Hub, alice: AbstractUser, alice_session: str, bob: AbstractUser, bob_session: str
) -> None:
    bobs = hub.subscribe(bob.pk, bob_session)
    await wait_until(lambda: hub.stats.ticks >= 1, what="the hub to start")
    recent = await Notification.objects.acreate(user=alice, text="a moment ago")
    old = await Notification.objects.acreate(user=alice, text="an hour ago")
    await Notification.objects.filter(pk=old.pk).aupdate(
        created=timezone.now() - timedelta(hours=1)
    )
    shown = await Notification.objects.acreate(user=alice, text="shown", dispatched=True)
    ticks = hub.stats.ticks
    await wait_until(lambda: hub.stats.ticks >= ticks + 2, what="the hub to read them")

    first = hub.subscribe(alice.pk, alice_session)
    second = hub.subscribe(alice.pk, alice_session)

    assert [n.pk for n in await asyncio.wait_for(first.next_batch(), 10) or []] == [recent.pk]
    assert [n.pk for n in await asyncio.wait_for(second.next_batch(), 10) or []] == [recent.pk]
    assert not (await Notification.objects.aget(pk=old.pk)).dispatched
    assert first.horizon == shown.pk  # all three came before: none of them comes live
    later = await Notification.objects.acreate(user=alice, text="later")
    assert [n.pk for n in await asyncio.wait_for(first.next_batch(), 10) or []] == [later.pk]
    for subscription in (bobs, first, second):
        hub.unsubscribe(subscription)


async def test_a_catch_up_leaves_out_what_is_at_or_below_the_streams_cursor(
    hub: Hub, alice: AbstractUser, alice_session: str
) -> None:
    below = await Notification.objects.acreate(user=alice, text="the client has it")
    above = await Notification.objects.acreate(user=alice, text="the client lacks it")
    stream = hub.subscribe(alice.pk, alice_session, after=below.pk)

    assert [n.pk for n in await asyncio.wait_for(stream.next_batch(), 10) or []] == [above.pk]
    later = await Notification.objects.acreate(user=alice, text="later")
    assert [n.pk for n in await asyncio.wait_for(stream.next_batch(), 10) or []] == [later.pk]
    assert not (await Notification.objects.aget(pk=below.pk)).dispatched
    hub.unsubscribe(stream)


async def test_a_closing_stream_releases_only_what_this_process_claimed_and_it_did_not_send(
    hub: Hub, alice: AbstractUser, alice_session: str
) -> None:
    replayed = await Notification.objects.acreate(user=alice, text="sent by the replay")
    subscription = hub.subscribe(alice.pk, alice_session, after=replayed.pk - 1)
    stream = notification_stream(hub, subscription)
    await next_chunk(stream)
    assert ids_in(await next_chunk(stream)) == [replayed.pk]
    ticks = hub.stats.ticks
    await wait_until(lambda: hub.stats.ticks >= ticks + 2, what="the catch-up's poll")
    # Claimed elsewhere first (another process), then handed to this stream, never sent.
    elsewhere = await Notification.objects.acreate(user=alice, text="x", dispatched=True)
    await wait_until(lambda: hub.stats.delivered >= 1, what="the hand-out")

    await stream.aclose()
    # The poll stops once nothing is left to release.
    await wait_until(lambda: not hub.polling, what="the poll to stop")

    assert hub.stats.released == 0
    assert (await Notification.objects.aget(pk=replayed.pk)).dispatched
    assert (await Notification.objects.aget(pk=elsewhere.pk)).dispatched


async def test_a_stream_sends_a_late_row_then_sets_the_last_event_id_back(
    hub: Hub, alice: AbstractUser, alice_session: str
) -> None:
    # Sent before the stream opens: the hub hands out neither, the test does.
    low = await Notification.objects.acreate(user=alice, text="low", dispatched=True)
    high = await Notification.objects.acreate(user=alice, text="high", dispatched=True)
    subscription = hub.subscribe(alice.pk, alice_session)
    stream = notification_stream(hub, subscription)
    await next_chunk(stream)
    subscription.push(high)
    assert ids_in(await next_chunk(stream)) == [high.pk]

    subscription.push(low)  # as the hub hands out a row committed late

    chunk = await next_chunk(stream)
    assert ids_in(chunk) == [low.pk, high.pk]
    assert chunk.endswith(f"\n\nid: {high.pk}\n\n")
    await stream.aclose()


@pytest.mark.postgresql
async def test_a_row_committed_after_the_hold_back_still_reaches_the_open_streams(
    hub: Hub, alice: AbstractUser, alice_session: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from notifications.hub import core

    real = core.Horizon

    def quick(*args: Any, **kwargs: Any) -> Any:
        return real(*args, **{**kwargs, "hold_back": 0.3})

    monkeypatch.setattr(core, "Horizon", quick)
    stream = notification_stream(hub, hub.subscribe(alice.pk, alice_session))
    await next_chunk(stream)
    await wait_until(lambda: hub.stats.ticks >= 1, what="the first poll")

    async with OpenTransaction(alice, "committed late") as late:
        early = await Notification.objects.acreate(user=alice, text="committed early")
        # Held back 0.3 s behind the open transaction's id, then passed on without it.
        assert ids_in(await next_chunk(stream)) == [early.pk]
        assert hub.late_ids >= 1
        await late.commit()

    chunk = await next_chunk(stream)
    assert ids_in(chunk) == [late.pk, early.pk]  # the late row, then the id set back
    assert hub.late_ids == 0
    marker = await Notification.objects.acreate(user=alice, text="marker")
    assert ids_in(await next_chunk(stream)) == [marker.pk]
    await stream.aclose()


# The worker thread and its connection.


async def test_the_poll_stops_and_lets_its_connection_go_when_idle(
    hub: Hub, alice: AbstractUser, alice_session: str
) -> None:
    subscription = hub.subscribe(alice.pk, alice_session)
    await wait_until(lambda: hub.stats.ticks >= 1, what="a poll")
    hub.unsubscribe(subscription)

    await wait_until(lambda: hub._task is None or hub._task.done(), what="the poll to stop")
    executor = hub._worker._executor
    assert executor is not None

    def worker_connection_closed() -> bool:
        from django.db import connection

        return connection.connection is None

    loop = asyncio.get_running_loop()
    assert await loop.run_in_executor(executor, worker_connection_closed)


@pytest.mark.postgresql
async def test_a_lost_database_connection_is_replaced_and_nothing_is_lost(
    hub: Hub, alice: AbstractUser, alice_session: str
) -> None:
    stream = notification_stream(hub, hub.subscribe(alice.pk, alice_session))
    await next_chunk(stream)
    first = await Notification.objects.acreate(user=alice, text="before")
    assert ids_in(await next_chunk(stream)) == [first.pk]

    def backend_pid() -> int:
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            return int(cursor.fetchone()[0])

    def terminate(pid: int) -> bool:
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
            return bool(cursor.fetchone()[0])

    hub_pid = await hub.run(backend_pid)
    assert await sync_to_async(terminate)(hub_pid)
    second = await Notification.objects.acreate(user=alice, text="after")

    assert ids_in(await next_chunk(stream)) == [second.pk]
    await stream.aclose()


@pytest.mark.django_db(transaction=True, databases=["default", MIRROR])
async def test_the_hub_uses_the_databases_the_router_picks(
    mirror_database: str, hub: Hub, alice: AbstractUser, alice_session: str, settings: Any
) -> None:
    settings.DATABASE_ROUTERS = ["tests.support.EverythingToMirror"]
    assert await hub.authenticate(alice_session) == alice.pk
    stream = notification_stream(hub, hub.subscribe(alice.pk, alice_session))
    await next_chunk(stream)
    n = await Notification.objects.acreate(user=alice, text="routed")
    assert ids_in(await next_chunk(stream)) == [n.pk]

    def opened() -> tuple[bool, bool]:
        from django.db import connections

        return connections[mirror_database].connection is not None, hasattr(
            connections._connections, "default"
        ) and connections["default"].connection is not None

    executor = hub._worker._executor
    assert executor is not None
    assert await asyncio.get_running_loop().run_in_executor(executor, opened) == (True, False)
    await stream.aclose()


# Session checks, run by the hub: a stream ends when its session or its user does.


async def test_the_stream_ends_when_its_session_is_deleted(
    hub: Hub, alice: AbstractUser, alice_session: str
) -> None:
    stream = notification_stream(hub, hub.subscribe(alice.pk, alice_session))
    await next_chunk(stream)
    await Session.objects.filter(session_key=alice_session).adelete()

    with pytest.raises(StopAsyncIteration):
        await next_chunk(stream)
    assert hub.stream_count == 0


async def test_the_stream_ends_when_its_user_is_deactivated(
    hub: Hub, alice: AbstractUser, alice_session: str
) -> None:
    stream = notification_stream(hub, hub.subscribe(alice.pk, alice_session))
    await next_chunk(stream)
    alice.is_active = False
    await alice.asave()

    with pytest.raises(StopAsyncIteration):
        await next_chunk(stream)


async def test_a_stream_opened_during_a_session_check_is_not_ended_by_it(
    hub: Hub,
    alice: AbstractUser,
    alice_session: str,
    bob: AbstractUser,
    bob_session: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from notifications import sessions

    real = sessions.session_users
    checking, resume = threading.Event(), threading.Event()

    def slow_session_users(keys: object, **kwargs: object) -> object:
        checking.set()
        resume.wait(10)
        return real(keys, **kwargs)  # type: ignore[arg-type]

    first = hub.subscribe(alice.pk, alice_session)
    monkeypatch.setattr(sessions, "session_users", slow_session_users)
    await wait_until(checking.is_set, what="a session check to start")

    late = hub.subscribe(bob.pk, bob_session)
    resume.set()
    ticks = hub.stats.ticks
    await wait_until(lambda: hub.stats.ticks >= ticks + 2, what="the check to finish")

    assert not late.closed
    assert not first.closed
    hub.unsubscribe(first)
    hub.unsubscribe(late)


async def test_a_check_in_parts_ends_only_the_streams_whose_session_ended(
    hub: Hub, alice: AbstractUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    from notifications import sessions
    from notifications.hub import session_checks

    monkeypatch.setattr(session_checks, "PART_SIZE", 2)
    keys = [await sync_to_async(session_for)(alice) for _ in range(5)]
    parts: list[int] = []
    real = sessions.session_users

    def counted(keys: Any, **kwargs: Any) -> dict[str, int]:
        parts.append(len(keys))
        return real(keys, **kwargs)

    monkeypatch.setattr(sessions, "session_users", counted)
    streams = [hub.subscribe(alice.pk, key) for key in keys]
    await wait_until(lambda: len(parts) >= 3, what="a first check")
    # Five keys in parts of about two: three jobs, each key in one of them.
    assert len(parts) == 3 and sum(parts) == 5

    await Session.objects.filter(session_key=keys[3]).adelete()

    await wait_until(lambda: streams[3].closed, what="the stream of the deleted session to end")
    assert [s.closed for s in streams] == [False, False, False, True, False]
    for subscription in streams:
        hub.unsubscribe(subscription)


# Admission.


async def test_a_stream_beyond_a_cap_is_refused_and_counted(
    hub: Hub,
    alice: AbstractUser,
    alice_session: str,
    bob: AbstractUser,
    bob_session: str,
    settings: Any,
) -> None:
    settings.NOTIFICATIONS_MAX_STREAMS_PER_USER = 2
    settings.NOTIFICATIONS_MAX_STREAMS = 3
    first, second = (hub.admit(alice.pk, alice_session) for _ in range(2))

    with pytest.raises(StreamRefused, match="at most 2 per server process") as per_user:
        hub.admit(alice.pk, alice_session)
    third = hub.admit(bob.pk, bob_session)
    with pytest.raises(StreamRefused, match="as many streams as it can") as per_process:
        hub.check_admission(bob.pk)

    assert per_user.value.retry_after == per_process.value.retry_after == 10
    assert hub.stats.refused == 2
    assert hub.stream_count == 3
    hub.unsubscribe(first)
    hub.check_admission(alice.pk)  # a closed stream frees its place
    for s in (second, third):
        hub.unsubscribe(s)


async def test_a_place_whose_stream_never_started_is_freed_by_the_sweep(
    hub: Hub, alice: AbstractUser, alice_session: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from notifications.hub import admission

    monkeypatch.setattr(admission, "UNSTARTED_TIMEOUT", 0)
    started = hub.subscribe(alice.pk, alice_session)
    started.started = True
    never_started = hub.subscribe(alice.pk, alice_session)

    await wait_until(lambda: never_started.closed, what="the sweep")

    assert not started.closed
    assert hub.stream_count == 1
    hub.unsubscribe(started)


# Authentication of new streams, batched.


async def test_streams_opening_together_are_authenticated_in_one_check(
    hub: Hub, alice: AbstractUser, bob: AbstractUser
) -> None:

    keys = [await sync_to_async(session_for)(u) for u in (alice, bob) for _ in range(25)]
    queries = hub.stats.session_queries

    users = await asyncio.gather(*(hub.authenticate(k) for k in [*keys, "unknown"]))

    assert users == [alice.pk] * 25 + [bob.pk] * 25 + [None]
    assert hub.stats.session_queries - queries <= 4  # one check (two queries), not fifty


# Replay: up to the hub's position when the stream subscribed; the rest comes live.


async def test_a_resumed_stream_replays_up_to_its_horizon_and_every_stream_gets_the_rest_live(
    hub: Hub, alice: AbstractUser, alice_session: str
) -> None:
    tab_a = notification_stream(hub, hub.subscribe(alice.pk, alice_session))
    await next_chunk(tab_a)
    before = await Notification.objects.acreate(user=alice, text="before tab B")
    assert ids_in(await next_chunk(tab_a)) == [before.pk]
    tab_b_place = hub.subscribe(alice.pk, alice_session, after=before.pk - 1)
    assert tab_b_place.horizon is not None and tab_b_place.horizon >= before.pk
    tab_b = notification_stream(hub, tab_b_place)
    await next_chunk(tab_b)

    assert ids_in(await next_chunk(tab_b)) == [before.pk]  # replayed to tab B alone
    after = await Notification.objects.acreate(user=alice, text="after")
    assert ids_in(await next_chunk(tab_a)) == [after.pk]
    assert ids_in(await next_chunk(tab_b)) == [after.pk]
    await tab_a.aclose()
    await tab_b.aclose()


@pytest.mark.usefixtures("slow_poll")
async def test_what_an_abandoned_replay_claims_is_released(
    hub: Hub, alice: AbstractUser, alice_session: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from notifications import queries
    from notifications.hub import worker

    # From before the hub started and outside the live window: only a replay claims it.
    n = await Notification.objects.acreate(user=alice, text="old")
    await Notification.objects.filter(pk=n.pk).aupdate(created=timezone.now() - timedelta(hours=1))
    real, go_on = queries.replay, threading.Event()

    def slow_replay(*args: Any) -> queries.Shown:
        go_on.wait(10)
        return real(*args)

    monkeypatch.setattr(queries, "replay", slow_replay)
    tab = hub.subscribe(alice.pk, alice_session, after=n.pk - 1)
    await wait_until(lambda: hub.stats.ticks >= 1, what="the first poll")
    monkeypatch.setattr(worker, "DATABASE_TIMEOUT", 0.1)
    with pytest.raises(TimeoutError):
        await hub.replay(tab, n.pk - 1, 10)  # the stream gives up waiting
    go_on.set()  # the query ends, and commits its claim, after all

    await wait_until(lambda: hub.stats.released == 1, what="the release")
    assert not (await Notification.objects.aget(pk=n.pk)).dispatched
    hub.unsubscribe(tab)


# Wake-ups: with an hour between polls, a notification arrives only if something woke the poll.


@pytest.fixture
def slow_poll(fast_poll: None, settings: Any) -> None:
    settings.NOTIFICATIONS_POLL_INTERVAL = 3600


async def stream_after_first_poll(
    hub: Hub, user: AbstractUser, session: str
) -> AsyncGenerator[str, None]:
    """Open a stream and wait for the poll its subscription starts; the next is an hour off."""
    stream = notification_stream(hub, hub.subscribe(user.pk, session))
    await next_chunk(stream)
    await wait_until(lambda: hub.stats.ticks >= 1, what="the first poll")
    return stream


@pytest.mark.usefixtures("slow_poll")
async def test_a_save_in_this_process_wakes_the_poll(
    hub: Hub, alice: AbstractUser, alice_session: str
) -> None:
    stream = await stream_after_first_poll(hub, alice, alice_session)

    n = await Notification.objects.acreate(user=alice, text="woken")

    assert ids_in(await next_chunk(stream)) == [n.pk]
    await stream.aclose()


@pytest.mark.usefixtures("slow_poll")
async def test_a_bulk_insert_wakes_the_poll_through_notifications_created(
    hub: Hub, alice: AbstractUser, alice_session: str
) -> None:
    from notifications.hub import notifications_created

    stream = await stream_after_first_poll(hub, alice, alice_session)

    rows = await Notification.objects.abulk_create(
        [Notification(user=alice, text=f"bulk {i}") for i in range(3)]
    )
    await sync_to_async(notifications_created)()

    got: list[int] = []
    while len(got) < 3:
        got += ids_in(await next_chunk(stream))
    assert got == [n.pk for n in rows]
    await stream.aclose()


@pytest.mark.usefixtures("slow_poll")
async def test_a_row_inserted_by_another_connection_wakes_the_poll(
    hub: Hub, alice: AbstractUser, alice_session: str
) -> None:
    """PostgreSQL: the insert trigger's NOTIFY; SQLite: the change in PRAGMA data_version."""
    from django.db import connection, connections

    stream = await stream_after_first_poll(hub, alice, alice_session)
    # The watcher is up, and its own first wake-up is behind us.
    if connection.vendor == "postgresql":
        await wait_until(lambda: hub.listening, what="the LISTEN connection")
    else:
        await wait_until(lambda: hub.stats.change_checks >= 2, what="two data_version reads")
    # That first wake-up makes a second poll; the next one is an hour off unless woken.
    await wait_until(lambda: hub.stats.ticks >= 2, what="the poll of the first wake-up")
    wakes = hub.stats.wakes

    def insert_elsewhere() -> int:
        # A connection of its own, outside Django's signals: as another process would.
        other = connections.create_connection("default")
        try:
            with other.cursor() as cursor:
                cursor.execute(
                    "INSERT INTO notifications_notification (user_id, text, dispatched, created)"
                    " VALUES (%s, %s, %s, %s) RETURNING id",
                    [alice.pk, "from elsewhere", False, timezone.now()],
                )
                return int(cursor.fetchone()[0])
        finally:
            other.close()

    pk = await sync_to_async(insert_elsewhere, thread_sensitive=False)()

    assert ids_in(await next_chunk(stream)) == [pk]
    assert hub.stats.wakes > wakes
    await stream.aclose()


# GC freezing.


async def test_a_hand_out_calls_for_a_freeze_of_what_it_made(
    hub: Hub, alice: AbstractUser, alice_session: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A broadcast's rows live until their streams send them: frozen as they are handed out,
    they stay out of the collector's full collections (which the session checks' freezing
    alone left them in for up to a check interval)."""
    from notifications.hub import core

    freezes: list[int] = []
    monkeypatch.setattr(core, "freeze_new_objects", lambda: freezes.append(1))
    subscription = hub.subscribe(alice.pk, alice_session)
    try:
        n = await Notification.objects.acreate(user=alice, text="for alice")

        batch = await asyncio.wait_for(subscription.next_batch(), 10)
        assert [x.pk for x in batch or []] == [n.pk]
        assert freezes
    finally:
        hub.unsubscribe(subscription)


def test_freezing_new_objects_freezes_and_never_thaws(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gc

    from notifications.hub import gcfreeze

    settings.NOTIFICATIONS_GC_FREEZE = True
    monkeypatch.setattr(gcfreeze, "_next_thaw", 1.0)  # a thaw is due
    gc.unfreeze()
    full_collections = gc.get_stats()[2]["collections"]
    try:
        gcfreeze.freeze_new_objects()

        assert gc.get_freeze_count() > 0
        assert gc.get_stats()[2]["collections"] == full_collections
        gc.unfreeze()
        settings.NOTIFICATIONS_GC_FREEZE = False
        gcfreeze.freeze_new_objects()
        assert gc.get_freeze_count() == 0
    finally:
        gc.unfreeze()


def test_long_lived_objects_are_frozen_then_thawed_and_collected(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gc

    from notifications.hub import gcfreeze

    settings.NOTIFICATIONS_GC_FREEZE = True
    monkeypatch.setattr(gcfreeze, "_next_thaw", 0.0)
    collections = gc.get_stats()[2]["collections"]
    try:
        gcfreeze.keep_long_lived_out_of_gc()
        assert gc.get_freeze_count() > 0
        monkeypatch.setattr(gcfreeze, "_next_thaw", 1.0)  # due: thaw and collect now

        gcfreeze.keep_long_lived_out_of_gc()

        assert gc.get_stats()[2]["collections"] > collections
        assert gc.get_freeze_count() > 0  # frozen again after the collection
        settings.NOTIFICATIONS_GC_FREEZE = False
        gc.unfreeze()
        gcfreeze.keep_long_lived_out_of_gc()
        assert gc.get_freeze_count() == 0
    finally:
        gc.unfreeze()


def test_gc_freezing_is_off_unless_the_site_turns_it_on(settings: Any) -> None:
    import gc

    from notifications import conf
    from notifications.hub import gcfreeze

    del settings.NOTIFICATIONS_GC_FREEZE
    assert conf.gc_freeze() is False
    gc.unfreeze()
    gcfreeze.keep_long_lived_out_of_gc()
    assert gc.get_freeze_count() == 0


# The change log: read and deleted events.


async def test_a_change_committed_while_the_log_is_read_is_read_at_the_next_poll(
    hub: Hub, alice: AbstractUser, alice_session: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from notifications import inbox
    from notifications.hub.change_feed import ChangeFeed

    row = await Notification.objects.acreate(user=alice, text="x", dispatched=True)
    real_read = ChangeFeed.read
    changed = False

    def read_then_change(feed: ChangeFeed, *args: Any, **kwargs: Any) -> Any:
        nonlocal changed
        result = real_read(feed, *args, **kwargs)
        if not changed:
            changed = True
            # Commits after this read's scan, in the worker's own connection (SQLite's
            # data_version does not move for it): only its local wake-up tells the hub.
            inbox.mark_read(alice.pk, [row.pk])
        return result

    monkeypatch.setattr(ChangeFeed, "read", read_then_change)
    # No fallback read within the test: only the kept wake-up can bring the change.
    monkeypatch.setattr("notifications.hub.core.CHANGES_FALLBACK", 60.0)
    stream = notification_stream(hub, hub.subscribe(alice.pk, alice_session))
    await next_chunk(stream)

    # Well before any fallback read: the wake-up during the read was kept.
    chunk = await next_chunk(stream, timeout=3)
    assert chunk == f'event: read\ndata: {{"ids": [{row.pk}], "unread": 0}}\n\n'
    await stream.aclose()


async def test_a_change_committed_once_the_stream_is_open_is_sent_before_the_log_is_first_read(
    hub: Hub, alice: AbstractUser, alice_session: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from notifications import inbox
    from notifications.hub.change_feed import ChangeFeed

    row = await Notification.objects.acreate(user=alice, text="x", dispatched=True)
    real_read = ChangeFeed.read
    marked = threading.Event()

    def read_after_the_change(feed: ChangeFeed, *args: Any, **kwargs: Any) -> Any:
        # The poll's first read of the log comes after the change commits: a stream's first
        # moments (a notification handed out, the user marking it read on another device).
        marked.wait(timeout=10)
        return real_read(feed, *args, **kwargs)

    monkeypatch.setattr(ChangeFeed, "read", read_after_the_change)
    stream = notification_stream(hub, hub.subscribe(alice.pk, alice_session))
    await next_chunk(stream)  # open: its retry field goes out once the stream is placed

    await sync_to_async(inbox.mark_read)(alice.pk, [row.pk])
    marked.set()

    chunk = await next_chunk(stream, timeout=5)
    assert chunk == f'event: read\ndata: {{"ids": [{row.pk}], "unread": 0}}\n\n'
    await stream.aclose()
