"""One stream's lifecycle, as the async generator a StreamingHttpResponse sends."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable

from django.db import DatabaseError

from . import conf, sse
from .hub import Hub
from .models import Notification

logger = logging.getLogger(__name__)

EVENT_NAME = "notification"


def encode(notification: Notification) -> str:
    """Return the SSE event for one notification."""
    payload = {
        "id": notification.pk,
        "text": notification.text,
        "created": notification.created.isoformat(timespec="microseconds"),
    }
    return sse.event(sse.json_data(payload), id=notification.pk, event=EVENT_NAME)


def _encode_all(notifications: Iterable[Notification]) -> str:
    return "".join(encode(n) for n in notifications)


async def notification_stream(
    hub: Hub, user_id: int, session_key: str, *, last_event_id: int | None = None
) -> AsyncIterator[str]:
    """Yield the user's notifications as SSE: replay after `last_event_id`, then live ones.

    Subscribes first and replays second, so a row created in between is not missed; a row
    both replayed and claimed live is sent once. Ends when the hub ends the subscription (the
    session ended); on a client disconnect Django cancels it and the `finally` unsubscribes.
    """
    subscription = hub.subscribe(user_id, session_key)
    try:
        # daphne sends the status line and headers only with the first body chunk.
        yield sse.retry(conf.retry_milliseconds())
        replayed: set[int] = set()
        if last_event_id is not None:
            try:
                rows = await hub.replay(subscription, last_event_id, conf.replay_limit())
            except (DatabaseError, TimeoutError):
                # Ending lets the client reconnect with the same cursor once the database
                # answers again; nothing has been sent, so nothing is skipped.
                logger.warning("Replay failed; ending the stream", exc_info=True)
                return
            if subscription.closed:
                # The session ended while the replay ran.
                return
            replayed = {n.pk for n in rows}
            if rows:
                yield _encode_all(rows)
        keepalive = conf.keepalive()
        while True:
            batch = await subscription.next_batch(idle=keepalive)
            if batch is None:
                return
            if not batch:
                yield sse.comment("keepalive")
                continue
            fresh = [n for n in batch if n.pk not in replayed]
            if fresh:
                yield _encode_all(fresh)
    finally:
        hub.unsubscribe(subscription)
