"""The hubs of this process, one per event loop: finding one, waking them all, their counters."""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from typing import Any

from django.db import transaction

from .core import Hub

_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub] = weakref.WeakKeyDictionary()


def get_hub() -> Hub:
    """Return the hub of the running event loop, creating it on first use."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        hub = _hubs[loop] = Hub()
    return hub


def notifications_created(using: str | None = None) -> None:
    """Wake this process's pollers once the current transaction commits.

    `Notification.save()` triggers this itself (a post_save receiver); code that inserts rows
    without save() (`bulk_create`, raw SQL) calls it after the insert. Other processes learn of
    new rows through PostgreSQL's NOTIFY (an insert trigger), SQLite's data_version, or at the
    latest at their next poll.
    """
    transaction.on_commit(wake_local_hubs, using=using, robust=True)


def wake_local_hubs() -> None:
    """Make every hub of this process poll now; safe to call from any thread."""
    for loop, hub in list(_hubs.items()):
        with contextlib.suppress(RuntimeError):  # a loop that is closed or closing
            loop.call_soon_threadsafe(hub.wake)


def process_stats() -> dict[str, Any]:
    """The counters of every hub in this process, summed; for health checks and metrics."""
    hubs = [hub for loop, hub in list(_hubs.items()) if not loop.is_closed()]
    ticks = [h.stats.last_tick for h in hubs if h.stats.last_tick is not None]
    return {
        "streams": sum(h.stream_count for h in hubs),
        "users": sum(len(h._subscriptions) for h in hubs),
        "ticks": sum(h.stats.ticks for h in hubs),
        "queries": sum(h.stats.queries + h.stats.session_queries for h in hubs),
        "claimed": sum(h.stats.claimed for h in hubs),
        "rows_read": sum(h.stats.rows_read for h in hubs),
        # Ids not visible yet that hold rows back, and those given up on still watched.
        "holes": sum(h.pending_ids for h in hubs),
        "late_holes": sum(h.late_ids for h in hubs),
        "delivered": sum(h.stats.delivered for h in hubs),
        "change_events": sum(h.stats.change_events for h in hubs),
        "released": sum(h.stats.released for h in hubs),
        "sessions_ended": sum(h.stats.sessions_ended for h in hubs),
        "refused": sum(h.stats.refused for h in hubs),
        "wakes": sum(h.stats.wakes for h in hubs),
        "change_checks": sum(h.stats.change_checks for h in hubs),
        "errors": sum(h.stats.errors for h in hubs),
        "last_tick_duration": max((h.stats.last_tick_duration for h in hubs), default=0.0),
        # time.monotonic() of the most recent poll of any hub, None before the first.
        "last_tick": max(ticks) if ticks else None,
        "polling": any(h.polling for h in hubs),
        "listening": any(h.listening for h in hubs),
    }
