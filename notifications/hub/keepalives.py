"""Keepalives: the streams quiet for NOTIFICATIONS_KEEPALIVE seconds are asked for a
`: keepalive` comment in passes over the ones that are due, not by a timer per stream.

A timer per stream woke the event loop once per stream and kept thousands of entries in its
timer heap, rescheduled at every event sent. Here a pass looks only at the streams whose
deadline came: each stream is looked at about once per keepalive period, whatever it sent.
"""

from __future__ import annotations

import heapq
import itertools

from .subscription import Subscription


class Keepalives:
    """Each open subscription, by the time from which it may be due for a keepalive."""

    def __init__(self) -> None:
        # (quiet since, as last seen; a tie-breaker; the subscription). A subscription has one
        # entry; one that sent something since is put back at its later time when it comes up.
        self._due: list[tuple[float, int, Subscription]] = []
        self._order = itertools.count()

    def __len__(self) -> int:
        return len(self._due)

    def add(self, subscription: Subscription) -> None:
        heapq.heappush(self._due, (subscription.quiet_since, next(self._order), subscription))

    def ask(self, now: float, keepalive: float) -> int:
        """Ask each subscription quiet since `now - keepalive` or longer for a keepalive;
        return how many were asked. Closed subscriptions are dropped."""
        # `since + keepalive <= now`, not `since <= now - keepalive`: the subtraction rounds,
        # and a stream asked at exactly a period after it went quiet would be left waiting.
        due = self._due
        asked = 0
        while due and due[0][0] + keepalive <= now:
            _, _, subscription = heapq.heappop(due)
            if subscription.closed:
                continue
            if subscription.quiet_since + keepalive <= now:
                subscription.keep_alive()
                asked += 1
                # Due again a period after this request, by when it has sent the comment.
                heapq.heappush(due, (now, next(self._order), subscription))
            else:
                heapq.heappush(due, (subscription.quiet_since, next(self._order), subscription))
        return asked

    def clear(self) -> None:
        self._due.clear()
