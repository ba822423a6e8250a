"""The process-wide poller: one claim query at a time for every stream in the process.

A stream subscribes its user to the hub of its event loop (`get_hub()`); the hub claims the
recent undispatched notifications of all subscribed users in one query and hands each row to
every stream of its user. All its database work runs in one worker thread, so a process holds
one database connection for its streams however many are open (plus, on PostgreSQL, the LISTEN
connection, which lives on the event loop).

Where each job lives:

- `core`: the Hub: subscriptions, fan-out, replay, the poll loop;
- `worker`: the one worker thread, its connection, query counting;
- `watchers`: PostgreSQL LISTEN and SQLite data_version, which wake the poll;
- `admission`: the caps on streams, and freeing places never used;
- `authentication`: new streams' session keys, checked in batches;
- `session_checks`: open streams whose session or user ended;
- `gcfreeze`: keeping long-lived objects out of full garbage collections;
- `registry`: the hub of each event loop, waking them all, their summed counters;
- `subscription`, `stats`: one stream's place in a hub; a hub's counters.
"""

from __future__ import annotations

from .admission import StreamRefused
from .core import Hub
from .registry import get_hub, notifications_created, process_stats, share, wake_local_hubs
from .stats import HubStats
from .subscription import Subscription
from .worker import DATABASE_TIMEOUT

__all__ = [
    "DATABASE_TIMEOUT",
    "Hub",
    "HubStats",
    "StreamRefused",
    "Subscription",
    "get_hub",
    "notifications_created",
    "process_stats",
    "share",
    "wake_local_hubs",
]
