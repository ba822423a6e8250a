"""The stream generator, driven directly in the test's event loop."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import AbstractUser

from notifications.hub import Hub
from notifications.models import Notification
from notifications.stream import notification_stream

from .support import ids_in, next_chunk, wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fast_poll")]


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
    n = await Notification.objects.acreate(
        user=alice, text="hello\nworld", url="/orders/42", level="success"
    )

    chunk = await next_chunk(stream)

    assert chunk == (
        f"id: {n.pk}\nevent: notification\ndata: "
        + json.dumps(
            {
                "id": n.pk,
                "text": "hello\nworld",
                "created": n.created.isoformat(timespec="microseconds"),
                "read": False,
                "url": "/orders/42",
                "level": "success",
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
    stream = notification_stream(hub, hub.subscribe(alice.pk, alice_session, after=seen.pk))
    await next_chunk(stream)

    assert ids_in(await next_chunk(stream)) == [missed.pk]
    live = await Notification.objects.acreate(user=alice, text="live")
    assert ids_in(await next_chunk(stream)) == [live.pk]
    await stream.aclose()


async def test_a_row_both_replayed_and_claimed_live_is_sent_once(
    hub: Hub, alice: AbstractUser, alice_session: str
) -> None:
    stream = notification_stream(hub, hub.subscribe(alice.pk, alice_session, after=0))
    await next_chunk(stream)  # subscribed; the replay has not run yet
    both = await Notification.objects.acreate(user=alice, text="both")
    await wait_until(lambda: hub.stats.claimed == 1, what="the hub to claim the row")

    assert ids_in(await next_chunk(stream)) == [both.pk]  # replayed or live, once
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

    body = NotificationStream(hub, hub.admit(alice.pk, alice_session))
    assert hub.stream_count == 1

    await sync_to_async(body.close)()  # as Django does, from a worker thread

    await wait_until(lambda: hub.stream_count == 0, what="the place to be freed")


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

    resumed = notification_stream(hub, hub.subscribe(alice.pk, alice_session, after=first.pk))
    await next_chunk(resumed)
    assert ids_in(await next_chunk(resumed)) == [second.pk]
    await resumed.aclose()


async def test_a_read_change_is_a_named_event_without_an_id(
    hub: Hub, alice: AbstractUser, alice_session: str
) -> None:
    from notifications import inbox

    stream = notification_stream(hub, hub.subscribe(alice.pk, alice_session))
    await next_chunk(stream)
    first, second = [await Notification.objects.acreate(user=alice, text=t) for t in ("one", "two")]
    seen: list[int] = []
    while len(seen) < 2:
        seen += ids_in(await next_chunk(stream))

    await sync_to_async(inbox.mark_read)(alice.pk, [first.pk])
    assert await next_chunk(stream) == (
        'event: read\ndata: {"ids": [' + str(first.pk) + '], "unread": 1}\n\n'
    )
    await sync_to_async(inbox.mark_all_read)(alice.pk)
    assert await next_chunk(stream) == (
        'event: read\ndata: {"all": true, "newest": ' + str(second.pk) + ', "unread": 0}\n\n'
    )
    await stream.aclose()


async def test_a_deletion_is_a_deleted_event_with_the_unread_count(
    hub: Hub, alice: AbstractUser, alice_session: str
) -> None:
    stream = notification_stream(hub, hub.subscribe(alice.pk, alice_session))
    await next_chunk(stream)
    rows = [await Notification.objects.acreate(user=alice, text=str(i)) for i in range(3)]
    seen: list[int] = []
    while len(seen) < 3:
        seen += ids_in(await next_chunk(stream))

    await Notification.objects.filter(pk__in=[rows[0].pk, rows[2].pk]).adelete()

    chunk = await next_chunk(stream)
    assert chunk == (
        f'event: deleted\ndata: {{"ids": [{rows[0].pk}, {rows[2].pk}], "unread": 1}}\n\n'
    )
    await stream.aclose()


async def test_another_users_changes_never_reach_the_stream(
    hub: Hub, alice: AbstractUser, alice_session: str, bob: AbstractUser
) -> None:
    from notifications import inbox

    stream = notification_stream(hub, hub.subscribe(alice.pk, alice_session))
    await next_chunk(stream)
    theirs = await Notification.objects.acreate(user=bob, text="bob's")
    await sync_to_async(inbox.mark_read)(bob.pk, [theirs.pk])
    await Notification.objects.filter(pk=theirs.pk).adelete()
    mine = await Notification.objects.acreate(user=alice, text="mine")

    # Bob's read and deleted changes came before alice's row, and none of them reached her.
    chunk = await next_chunk(stream)
    assert ids_in(chunk) == [mine.pk]
    assert "event: read" not in chunk and "event: deleted" not in chunk
    assert hub.stats.change_events == 0
    await stream.aclose()
