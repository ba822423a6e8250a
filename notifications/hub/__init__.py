"""The process-wide poller: one cursor over every new notification, for every stream in the
process.

A stream subscribes its user to the hub of its event loop (`get_hub()`); the hub reads each new
row once, whoever it is for, and hands the rows of its users to every one of their streams, in
id order. All its database work runs in one worker thread, so a process holds one database
connection for its streams however many are open (plus, on PostgreSQL, the LISTEN connection,
which lives on the event loop).

Where each job lives:

- `core`: the Hub: subscriptions, fan-out, replay, catch-up, the poll loop;
- `horizon`: the order rows are passed on in: by id, behind ids not committed yet;
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
from .registry import get_hub, notifications_created, process_stats, wake_local_hubs
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
    "wake_local_hubs",
]
