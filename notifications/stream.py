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
from .models import Notification

logger = logging.getLogger(__name__)

EVENT_NAME = "notification"


def encode(notification: Notification) -> str:
    """Return the SSE event for one notification."""
    data = sse.json_data(payload.notification(notification))
    return sse.event(data, id=notification.pk, event=EVENT_NAME)


def _encode_all(notifications: Iterable[Notification]) -> str:
    return "".join(encode(n) for n in notifications)


class NotificationStream:
    """A stream response's body: the generator below, plus a `close()` that frees its place.

    Django calls `close()` when the response ends, also when the client left before the
    generator ever ran (its `finally` then never runs). Closing twice is harmless.
    """

    def __init__(self, hub: Hub, subscription: Subscription, *, last_event_id: int | None) -> None:
        self._hub = hub
        self._subscription = subscription
        self._loop = asyncio.get_running_loop()
        self._iterator = notification_stream(hub, subscription, last_event_id=last_event_id)

    def __aiter__(self) -> AsyncIterator[str]:
        return self._iterator

    def close(self) -> None:
        # Django calls this from a worker thread; the hub belongs to the event loop.
        with contextlib.suppress(RuntimeError):  # the loop is already closed
            self._loop.call_soon_threadsafe(self._hub.unsubscribe, self._subscription)


async def notification_stream(
    hub: Hub, subscription: Subscription, *, last_event_id: int | None = None
) -> AsyncIterator[str]:
    """Yield the subscription's notifications as SSE: replay after `last_event_id`, then live.

    Subscribed first and replaying second, so a row created in between is not missed; a row
    both replayed and claimed live is sent once. Ends when the hub ends the subscription (the
    session ended), and after `NOTIFICATIONS_STREAM_MAX_BYTES` (the client reconnects with its
    Last-Event-ID); on a client disconnect Django cancels it and the `finally` unsubscribes.
    """
    started = time.monotonic()
    sent_events = 0
    sent_bytes = 0
    reason = "client disconnected"
    subscription.started = True
    logger.info("Stream opened: user %s", subscription.user_id)
    try:
        # daphne sends the status line and headers only with the first body chunk.
        yield sse.retry(conf.retry_milliseconds())
        if subscription.closed:
            reason = "refused"
            return
        replayed: set[int] = set()
        if last_event_id is not None:
            try:
                rows = await hub.replay(subscription, last_event_id, conf.replay_limit())
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
            replayed = {n.pk for n in rows}
            if rows:
                chunk = _encode_all(rows)
                sent_events += len(rows)
                sent_bytes += len(chunk.encode())
                yield chunk
        keepalive = conf.keepalive()
        max_bytes = conf.stream_max_bytes()
        while True:
            if max_bytes and sent_bytes >= max_bytes:
                # A client that stops reading leaves what is sent in daphne's buffer; ending
                # the stream caps that buffer, and a reading client just reconnects.
                reason = "byte budget spent"
                return
            batch = await subscription.next_batch(idle=keepalive)
            if batch is None:
                reason = "session ended"
                return
            if not batch:
                comment = sse.comment("keepalive")
                sent_bytes += len(comment)
                yield comment
                continue
            fresh = [n for n in batch if n.pk not in replayed]
            if fresh:
                chunk = _encode_all(fresh)
                sent_events += len(fresh)
                sent_bytes += len(chunk.encode())
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
