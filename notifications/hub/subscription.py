"""One stream's place in a hub: the notifications and change events handed to it, waiting to
be sent."""

from __future__ import annotations

import asyncio
import time
from collections import deque

from ..models import Notification
from .change_events import ChangeEvent

# What a stream sends: a notification, or a read or deleted event.
Item = Notification | ChangeEvent


class Subscription:
    """One stream's place in the hub: what was handed to it, waiting to be sent, in order."""

    def __init__(self, user_id: int, session_key: str, *, after: int | None = None) -> None:
        self.user_id = user_id
        self.session_key = session_key
        # The stream's cursor (Last-Event-ID): its client has every notification up to it.
        self.after = after
        # The hub's position when the stream subscribed (None until the hub knows it): rows
        # up to it are the replay's, rows above it come live.
        self.horizon: int | None = None
        # What the stream's replay sent: never queued again.
        self.replayed: set[int] = set()
        self.closed = False
        # Set when the stream's generator runs; see admission.stale_unstarted().
        self.started = False
        self.created = time.monotonic()
        # When the stream last took something to send (or opened): the hub asks a stream
        # quiet for NOTIFICATIONS_KEEPALIVE seconds for a keepalive.
        self.quiet_since = self.created
        self._keepalive = False
        self._items: deque[Item] = deque()
        self._ready = asyncio.Event()

    def wants(self, pk: int) -> bool:
        """Whether a row that passes the hub's position now is this stream's to send live."""
        return self.horizon is not None and pk > self.horizon and self.lacks(pk)

    def lacks(self, pk: int) -> bool:
        """Whether the stream's client may lack this row: it is above the stream's cursor.

        For rows handed out of order (a catch-up, a row committed late): the client has every
        row up to its cursor, and the contract sends only greater ids after it.
        """
        return self.after is None or pk > self.after

    def push(self, item: Item) -> None:
        """Queue a notification or change event to send, unless the replay sent it already."""
        if self.closed or (isinstance(item, Notification) and item.pk in self.replayed):
            return
        self._items.append(item)
        self._ready.set()

    def mark_replayed(self, ids: set[int]) -> None:
        """Note what the replay sent, and drop those rows from the queue."""
        self.replayed |= ids

        def replayed(item: Item) -> bool:
            return isinstance(item, Notification) and item.pk in ids

        if any(replayed(item) for item in self._items):
            self._items = deque(item for item in self._items if not replayed(item))

    def keep_alive(self) -> None:
        """Have the stream send a keepalive comment now, if nothing else comes first."""
        self._keepalive = True
        self._ready.set()

    def close(self) -> list[Notification]:
        """End the subscription; return the notifications it held and will now never send."""
        self.closed = True
        self._ready.set()
        return [item for item in self.drain() if isinstance(item, Notification)]

    def drain(self) -> list[Item]:
        items = list(self._items)
        self._items.clear()
        return items

    async def next_batch(self) -> list[Item] | None:
        """Return what arrived, waiting for it; [] for a keepalive the hub asked for.

        Return None once the subscription is closed. No timer of its own: the hub asks the
        quiet streams for their keepalives in passes (hub/keepalives.py), one wake-up of the
        event loop per pass, not one per stream.
        """
        if not (self._items or self.closed or self._keepalive):
            await self._ready.wait()
        self._ready.clear()
        self._keepalive = False
        self.quiet_since = time.monotonic()
        if self._items:
            return self.drain()
        return None if self.closed else []
