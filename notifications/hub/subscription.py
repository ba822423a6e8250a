"""One stream's place in a hub: the notifications claimed for it, waiting to be sent."""

from __future__ import annotations

import asyncio
import time
from collections import deque

from ..models import Notification


class Subscription:
    """One stream's place in the hub: the notifications claimed for it, waiting to be sent."""

    def __init__(self, user_id: int, session_key: str) -> None:
        self.user_id = user_id
        self.session_key = session_key
        self.closed = False
        # Set when the stream's generator runs; see admission.stale_unstarted().
        self.started = False
        self.created = time.monotonic()
        self._items: deque[Notification] = deque()
        self._ready = asyncio.Event()

    def push(self, notification: Notification) -> None:
        if not self.closed:
            self._items.append(notification)
            self._ready.set()

    def close(self) -> list[Notification]:
        """End the subscription; return what it held and will now never send."""
        self.closed = True
        self._ready.set()
        return self.drain()

    def drain(self) -> list[Notification]:
        items = list(self._items)
        self._items.clear()
        return items

    async def next_batch(self, idle: float) -> list[Notification] | None:
        """Return what arrived, waiting for it up to `idle` seconds ([] if nothing came).

        Return None once the subscription is closed.
        """
        if not self._items and not self.closed:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a
            # cancellation that lands just after the event is set, and the stream would
            # outlive its client.
            try:
                async with asyncio.timeout(idle):
                    await self._ready.wait()
            except TimeoutError:
                return []
        self._ready.clear()
        if self._items:
            return self.drain()
        return None if self.closed else []
