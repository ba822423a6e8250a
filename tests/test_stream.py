"""The hub and the stream generator, driven directly in the test's event loop."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import AbstractUser
from django.contrib.sessions.models import Session
from django.utils import timezone

from notifications.hub import Hub
from notifications.models import Notification
from notifications.stream import notification_stream

from .support import wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fast_poll")]


def ids_in(chunk: str) -> list[int]:
    return [int(line[4:]) for line in chunk.split("\n") if line.startswith("id: ")]


async def next_chunk(stream: object, timeout: float = 10) -> str:
    return await asyncio.wait_for(anext(stream), timeout)  # type: ignore[call-overload]


async def test_first_chunk_is_the_retry_field_at_once(
    hub: Hub, alice: AbstractUser, alice_session: str
) -> None:
    stream = notification_stream(hub, hub.subscribe(alice.pk, alice_session))
    assert await next_chunk(stream, timeout=1) == "retry: 2000\n\n"
    await stream.aclose()


async def test_live_notification_is_sent_once_as_an_sse_event(
    hub: Hub, alice: AbstractUser, alice_session: str
) -> None:
    stream = notification_stream(hub, hub.subscribe(alice.pk, alice_session))
    await next_chunk(stream)
    n = await Notification.objects.acreate(user=alice, text="hello\nworld")

    chunk = await next_chunk(stream)

    assert chunk == (
        f"id: {n.pk}\nevent: notification\ndata: "
        + json.dumps(
            {
                "id": n.pk,
                "text": "hello\nworld",
                "created": n.created.isoformat(timespec="microseconds"),
            }
        )
        + "\n\n"
    )
    await n.arefresh_from_db()
    assert n.dispatched
    await stream.aclose()


async def test_keepalive_comment_when_idle(
    hub: Hub, alice: AbstractUser, alice_session: str, settings: object
) -> None:
    settings.NOTIFICATIONS_KEEPALIVE = 0.05  # type: ignore[attr-defined]
    stream = notification_stream(hub, hub.subscribe(alice.pk, alice_session))
    await next_chunk(stream)
    assert await next_chunk(stream) == ": keepalive\n"
    await stream.aclose()


async def test_replay_sends_rows_after_the_cursor_then_goes_live(
    hub: Hub, alice: AbstractUser, alice_session: str
) -> None:
    await Notification.objects.acreate(user=alice, text="old", dispatched=True)
    seen = await Notification.objects.acreate(user=alice, text="seen", dispatched=True)
    missed = await Notification.objects.acreate(user=alice, text="missed", dispatched=True)
    stream = notification_stream(hub, hub.subscribe(alice.pk, alice_session), last_event_id=seen.pk)
    await next_chunk(stream)

    assert ids_in(await next_chunk(stream)) == [missed.pk]
    live = await Notification.objects.acreate(user=alice, text="live")
    assert ids_in(await next_chunk(stream)) == [live.pk]
    await stream.aclose()


async def test_a_row_both_replayed_and_claimed_live_is_sent_once(
    hub: Hub, alice: AbstractUser, alice_session: str
) -> None:
    stream = notification_stream(hub, hub.subscribe(alice.pk, alice_session), last_event_id=0)
    await next_chunk(stream)  # subscribed; the replay has not run yet
    both = await Notification.objects.acreate(user=alice, text="both")
    await wait_until(lambda: hub.stats.claimed == 1, what="the hub to claim the row")

    assert ids_in(await next_chunk(stream)) == [both.pk]  # from the replay
    after = await Notification.objects.acreate(user=alice, text="after")
    assert ids_in(await next_chunk(stream)) == [after.pk]  # not `both` again
    await stream.aclose()


async def test_closing_the_generator_unsubscribes(
    hub: Hub, alice: AbstractUser, alice_session: str
) -> None:
    stream = notification_stream(hub, hub.subscribe(alice.pk, alice_session))
    await next_chunk(stream)
    assert hub.stream_count == 1

    await stream.aclose()

    assert hub.stream_count == 0


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

    assert [x.pk for x in await a1.next_batch(10) or []] == [n.pk]
    assert [x.pk for x in await a2.next_batch(10) or []] == [n.pk]
    assert [x.pk for x in await b.next_batch(10) or []] == [m.pk]
    for s in (a1, a2, b):
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


async def test_one_query_per_poll_however_many_streams(hub: Hub, settings: object) -> None:
    settings.NOTIFICATIONS_SESSION_CHECK_INTERVAL = 3600  # type: ignore[attr-defined]
    for user_id in range(1, 201):
        hub.subscribe(user_id, f"key{user_id}")
    await wait_until(lambda: hub.stats.ticks >= 2, what="the poll to start")
    ticks = hub.stats.ticks

    await wait_until(lambda: hub.stats.ticks >= ticks + 5, what="five polls")

    assert hub.stats.last_tick_queries == 1
    await hub.aclose()


async def test_the_poll_stops_and_lets_its_connection_go_when_idle(
    hub: Hub, alice: AbstractUser, alice_session: str
) -> None:
    subscription = hub.subscribe(alice.pk, alice_session)
    await wait_until(lambda: hub.stats.ticks >= 1, what="a poll")
    hub.unsubscribe(subscription)

    await wait_until(lambda: hub._task is None or hub._task.done(), what="the poll to stop")
    assert hub._executor is not None

    def worker_connection_closed() -> bool:
        from django.db import connection

        return connection.connection is None

    loop = asyncio.get_running_loop()
    assert await loop.run_in_executor(hub._executor, worker_connection_closed)


async def test_a_database_error_delays_delivery_without_ending_the_stream(
    hub: Hub, alice: AbstractUser, alice_session: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django.db import OperationalError

    from notifications import services

    real = services.claim_pending
    failures = 0

    def flaky(*args: object, **kwargs: object) -> object:
        nonlocal failures
        if failures < 3:
            failures += 1
            raise OperationalError("database is locked (simulated)")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(services, "claim_pending", flaky)
    stream = notification_stream(hub, hub.subscribe(alice.pk, alice_session))
    await next_chunk(stream)
    n = await Notification.objects.acreate(user=alice, text="late")

    assert ids_in(await next_chunk(stream)) == [n.pk]
    assert hub.stats.errors == 3
    await stream.aclose()


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


async def test_a_stream_opened_during_a_session_check_is_not_ended_by_it(
    hub: Hub,
    alice: AbstractUser,
    alice_session: str,
    bob: AbstractUser,
    bob_session: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import threading

    from notifications import hub as hub_module

    real = hub_module.session_users
    checking, resume = threading.Event(), threading.Event()

    def slow_session_users(keys: object, **kwargs: object) -> object:
        checking.set()
        resume.wait(10)
        return real(keys, **kwargs)  # type: ignore[arg-type]

    first = hub.subscribe(alice.pk, alice_session)
    monkeypatch.setattr(hub_module, "session_users", slow_session_users)
    await wait_until(checking.is_set, what="a session check to start")

    late = hub.subscribe(bob.pk, bob_session)
    resume.set()
    ticks = hub.stats.ticks
    await wait_until(lambda: hub.stats.ticks >= ticks + 2, what="the check to finish")

    assert not late.closed
    assert not first.closed
    hub.unsubscribe(first)
    hub.unsubscribe(late)


async def test_a_replay_shares_what_it_claims_with_the_users_other_streams(
    hub: Hub, alice: AbstractUser, alice_session: str, settings: object
) -> None:
    settings.NOTIFICATIONS_POLL_INTERVAL = 3600  # type: ignore[attr-defined]
    tab_a = notification_stream(hub, hub.subscribe(alice.pk, alice_session))
    await next_chunk(tab_a)  # subscribed; the poll ran once and now sleeps
    # Inserted without save(), so nothing wakes the poll: the replay claims it.
    [n] = await Notification.objects.abulk_create([Notification(user=alice, text="for both tabs")])
    tab_b = notification_stream(hub, hub.subscribe(alice.pk, alice_session), last_event_id=n.pk - 1)
    await next_chunk(tab_b)

    assert ids_in(await next_chunk(tab_b)) == [n.pk]  # replayed (and claimed) by tab B
    assert ids_in(await next_chunk(tab_a)) == [n.pk]  # tab A is not left out
    await tab_a.aclose()
    await tab_b.aclose()


async def test_a_cancel_right_after_a_push_still_ends_the_stream(
    hub: Hub, alice: AbstractUser, alice_session: str
) -> None:
    from django.utils import timezone

    stream = notification_stream(hub, hub.subscribe(alice.pk, alice_session))
    await next_chunk(stream)

    async def consume() -> None:
        async for _ in stream:
            pass

    task = asyncio.ensure_future(consume())
    [subscription] = hub._subscriptions[alice.pk]
    await asyncio.sleep(0)  # one step of the loop: the consumer parks in next_batch
    subscription.push(Notification(pk=10**9, user=alice, text="x", created=timezone.now()))
    task.cancel()

    done, _ = await asyncio.wait([task], timeout=5)
    assert task in done and task.cancelled()
    assert hub.stream_count == 0


async def test_closing_a_stream_body_that_never_ran_frees_its_place(
    hub: Hub, alice: AbstractUser, alice_session: str
) -> None:
    from notifications.stream import NotificationStream

    body = NotificationStream(hub, hub.admit(alice.pk, alice_session), last_event_id=None)
    assert hub.stream_count == 1

    await sync_to_async(body.close)()  # as Django does, from a worker thread

    await wait_until(lambda: hub.stream_count == 0, what="the place to be freed")


async def test_a_place_whose_stream_never_started_is_freed_by_the_sweep(
    hub: Hub, alice: AbstractUser, alice_session: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from notifications import hub as hub_module

    monkeypatch.setattr(hub_module, "UNSTARTED_TIMEOUT", 0)
    started = hub.subscribe(alice.pk, alice_session)
    started.started = True
    never_started = hub.subscribe(alice.pk, alice_session)

    await wait_until(lambda: never_started.closed, what="the sweep")

    assert not started.closed
    assert hub.stream_count == 1
    hub.unsubscribe(started)


async def test_a_stream_ends_after_its_byte_budget_and_resumes_without_a_gap(
    hub: Hub, alice: AbstractUser, alice_session: str, settings: Any
) -> None:
    settings.NOTIFICATIONS_STREAM_MAX_BYTES = 300
    stream = notification_stream(hub, hub.subscribe(alice.pk, alice_session))
    await next_chunk(stream)
    first = await Notification.objects.acreate(user=alice, text="x" * 400)
    assert ids_in(await next_chunk(stream)) == [first.pk]
    second = await Notification.objects.acreate(user=alice, text="after the budget")

    with pytest.raises(StopAsyncIteration):
        await next_chunk(stream)  # ended: a client reconnects with Last-Event-ID

    resumed = notification_stream(
        hub, hub.subscribe(alice.pk, alice_session), last_event_id=first.pk
    )
    await next_chunk(resumed)
    assert ids_in(await next_chunk(resumed)) == [second.pk]
    await resumed.aclose()


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


async def test_streams_opening_together_are_authenticated_in_one_check(
    hub: Hub, alice: AbstractUser, bob: AbstractUser
) -> None:
    from .conftest import session_for

    keys = [await sync_to_async(session_for)(u) for u in (alice, bob) for _ in range(25)]
    queries = hub.stats.session_queries

    users = await asyncio.gather(*(hub.authenticate(k) for k in [*keys, "unknown"]))

    assert users == [alice.pk] * 25 + [bob.pk] * 25 + [None]
    assert hub.stats.session_queries - queries <= 4  # one check (two queries), not fifty


@pytest.mark.usefixtures("slow_poll")
async def test_what_an_abandoned_replay_claims_still_reaches_the_users_other_streams(
    hub: Hub, alice: AbstractUser, alice_session: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from notifications import hub as hub_module
    from notifications import services

    tab_a = hub.subscribe(alice.pk, alice_session)
    await wait_until(lambda: hub.stats.ticks >= 1, what="the first poll")
    [n] = await Notification.objects.abulk_create([Notification(user=alice, text="late")])
    # Outside the live window: only the replay can claim it, never the poll.
    await Notification.objects.filter(pk=n.pk).aupdate(created=timezone.now() - timedelta(hours=1))
    real, go_on = services.replay, threading.Event()

    def slow_replay(*args: Any) -> services.Shown:
        go_on.wait(10)
        return real(*args)

    monkeypatch.setattr(services, "replay", slow_replay)
    monkeypatch.setattr(hub_module, "DATABASE_TIMEOUT", 0.1)
    tab_b = hub.subscribe(alice.pk, alice_session)
    with pytest.raises(TimeoutError):
        await hub.replay(tab_b, n.pk - 1, 10)  # tab B gives up waiting
    go_on.set()  # the query ends, and commits its claim, after all

    assert [x.pk for x in await tab_a.next_batch(idle=10) or []] == [n.pk]
    hub.unsubscribe(tab_a)
    hub.unsubscribe(tab_b)


def test_long_lived_objects_are_frozen_then_thawed_and_collected(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gc

    from notifications import hub as hub_module

    settings.NOTIFICATIONS_GC_FREEZE = True
    monkeypatch.setattr(hub_module, "_next_thaw", 0.0)
    collections = gc.get_stats()[2]["collections"]
    try:
        hub_module._keep_long_lived_out_of_gc()
        assert gc.get_freeze_count() > 0
        monkeypatch.setattr(hub_module, "_next_thaw", 1.0)  # due: thaw and collect now

        hub_module._keep_long_lived_out_of_gc()

        assert gc.get_stats()[2]["collections"] > collections
        assert gc.get_freeze_count() > 0  # frozen again after the collection
        settings.NOTIFICATIONS_GC_FREEZE = False
        gc.unfreeze()
        hub_module._keep_long_lived_out_of_gc()
        assert gc.get_freeze_count() == 0
    finally:
        gc.unfreeze()
