"""One stream's lifecycle, as the async generator a StreamingHttpResponse sends."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterable

from django.db import DatabaseError

from . import conf, payload, sse
from .hub import Hub, Subscription
from .hub.change_events import ChangeEvent
from .hub.subscription import Item
from .models import Notification

logger = logging.getLogger(__name__)

EVENT_NAME = "notification"

KEEPALIVE = sse.comment("keepalive").encode()


def encode(notification: Notification) -> str:
    """Return the SSE event for one notification."""
    data = sse.json_data(payload.notification(notification))
    return sse.event(data, id=notification.pk, event=EVENT_NAME)


class NotificationStream:
    """A stream response's body: the generator below, plus a `close()` that frees its place.

    Django calls `close()` when the response ends, also when the client left before the
    generator ever ran (its `finally` then never runs). Closing twice is harmless.
    """

    def __init__(self, hub: Hub, subscription: Subscription) -> None:
        self._hub = hub
        self._subscription = subscription
        self._loop = asyncio.get_running_loop()
        self._iterator = notification_stream(hub, subscription)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterator

    def close(self) -> None:
        # Django calls this from a worker thread; the hub belongs to the event loop.
        with contextlib.suppress(RuntimeError):  # the loop is already closed
            self._loop.call_soon_threadsafe(self._hub.unsubscribe, self._subscription)


async def notification_stream(hub: Hub, subscription: Subscription) -> AsyncIterator[bytes]:
    """Yield the subscription's notifications as SSE: replay after its cursor, then live.

    Subscribed first and replaying second: the replay covers the rows after the cursor up to
    the hub's position when the stream subscribed, live delivery what passes it after, so a
    row is sent once and a resumed stream never jumps an id still to commit. Events go out in
    id order; a row sent after a higher id (one committed late, a catch-up) is followed by a
    bare `id:` field that sets the browser's Last-Event-ID back to the highest id sent.

    Ends when the hub ends the subscription (the session ended), and after
    `NOTIFICATIONS_STREAM_MAX_BYTES` (the client reconnects with its Last-Event-ID); on a
    client disconnect Django cancels it and the `finally` unsubscribes.
    """
    started = time.monotonic()
    sent_events = 0
    sent_bytes = 0
    reason = "client disconnected"
    subscription.started = True
    logger.info("Stream opened: user %s", subscription.user_id)
    try:
        # A stream that opens as the poll starts waits for the poll's first query (ms), so
        # that what commits once its client sees it open comes live.
        with contextlib.suppress(TimeoutError):
            await hub.placed(subscription)
        # daphne sends the status line and headers only with the first body chunk.
        yield sse.retry(conf.retry_milliseconds()).encode()
        if subscription.closed:
            reason = "refused"
            return
        highest = subscription.after or 0
        if subscription.after is not None:
            try:
                rows = await hub.replay(subscription, subscription.after, conf.replay_limit())
            except (DatabaseError, TimeoutError):
                # Ending lets the client reconnect with the same cursor once the database
                # answers again; nothing has been sent, so nothing is skipped.
                logger.warning(
                    "Replay failed for user %s; ending the stream",
                    subscription.user_id,
                    exc_info=True,
                )
                reason = "replay failed"
                return
            if subscription.closed:
                reason = "session ended"
                return
            subscription.mark_replayed({n.pk for n in rows})
            if rows:
                text, highest = _encode_in_order(rows, highest)
                chunk = text.encode()
                sent_events += len(rows)
                sent_bytes += len(chunk)
                subscription.quiet_since = time.monotonic()  # no keepalive right after it
                yield chunk
        max_bytes = conf.stream_max_bytes()
        while True:
            if max_bytes and sent_bytes >= max_bytes:
                # A client that stops reading leaves what is sent in daphne's buffer; ending
                # the stream caps that buffer, and a reading client just reconnects.
                reason = "byte budget spent"
                return
            batch = await subscription.next_batch()
            if batch is None:
                reason = "session ended"
                return
            if not batch:
                sent_bytes += len(KEEPALIVE)
                yield KEEPALIVE
                continue
            text, highest, count = _encode_batch(batch, highest)
            if text:
                # Bytes, encoded once: Django passes them on as they are.
                chunk = text.encode()
                sent_events += count
                sent_bytes += len(chunk)
                yield chunk
    finally:
        hub.unsubscribe(subscription)
        logger.info(
            "Stream closed: user %s, %.1f s, %d events, %s",
            subscription.user_id,
            time.monotonic() - started,
            sent_events,
            reason,
        )


def encode_change(event: ChangeEvent) -> str:
    """Return the SSE event for a read or deleted change: named, with no id.

    No `id:` field, so the browser's Last-Event-ID stays the id of the last notification: the
    HTML Standard (9.2.6) sets the last event ID only from an `id:` field, and an event without
    one keeps it. A resume after a change event therefore replays from the right place.
    """
    return sse.event(sse.json_data(event.data), event=event.name)


def _encode_batch(batch: Iterable[Item], highest: int) -> tuple[str, int, int]:
    """Return the events for a batch in the order it was handed over, the highest id sent,
    and how many events there are.

    Order matters: a change event's unread count covers the notifications handed before it.
    """
    parts: list[str] = []
    run: list[Notification] = []
    count = 0
    for item in [*batch, None]:
        if isinstance(item, Notification):
            run.append(item)
            continue
        if run:
            chunk, highest = _encode_in_order(run, highest)
            parts.append(chunk)
            count += len(run)
            run = []
        if item is not None:
            parts.append(encode_change(item))
            count += 1
    return "".join(parts), highest, count


def _encode_in_order(notifications: Iterable[Notification], highest: int) -> tuple[str, int]:
    """Return the events for these notifications in id order, and the highest id sent so far.

    The client's Last-Event-ID must stay the highest id it has: it resumes from there, and
    everything below it has been sent. After a row with a lower id, a bare `id:` field sets it
    back. The HTML Standard (9.2.6, "dispatch the event") sets the last event ID string from
    the id buffer first, then returns without an event when the data buffer is empty.
    """
    ordered = sorted(notifications, key=lambda n: n.pk)
    chunk = "".join(encode(n) for n in ordered)
    if ordered and ordered[-1].pk < highest:
        chunk += sse.last_event_id(highest)
    return chunk, max(highest, ordered[-1].pk) if ordered else highest
