"""Admission: the caps on streams per user and per process, and freeing places never used."""

from __future__ import annotations

import time

from .. import conf
from .subscription import Subscription

# Seconds after which a place reserved for a stream whose response never started is freed.
UNSTARTED_TIMEOUT = 30


class StreamRefused(Exception):
    """A new stream would exceed the per-user or the per-process cap."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def check_caps(user_streams: int, all_streams: int) -> None:
    """Raise StreamRefused if one more stream would exceed a cap.

    `user_streams` are the user's open streams in this hub, `all_streams` every stream in it.
    """
    per_user = conf.max_streams_per_user()
    if user_streams >= per_user:
        raise StreamRefused(
            f"Too many open streams for this account: at most {per_user} per server "
            "process. Close other tabs or windows of this site, or try again later.",
            retry_after=10,
        )
    if all_streams >= conf.effective_max_streams():
        raise StreamRefused(
            "This server holds as many streams as it can; try again shortly.",
            retry_after=10,
        )


def sweep_unstarted(unstarted: set[Subscription]) -> list[Subscription]:
    """Forget the subscriptions of `unstarted` that started or closed; return the stale ones.

    A stream whose client left while the response was still in Django's middleware never runs
    its generator, and Django never closes its body: the caller frees its place.
    """
    stale = time.monotonic() - UNSTARTED_TIMEOUT
    found: list[Subscription] = []
    for subscription in list(unstarted):
        if subscription.started or subscription.closed:
            unstarted.discard(subscription)
        elif subscription.created < stale:
            unstarted.discard(subscription)
            found.append(subscription)
    return found
