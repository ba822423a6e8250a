"""A hub's counters, for tests, benchmarks, health checks and metrics."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class HubStats:
    """Counters for tests, benchmarks and operators."""

    ticks: int = 0
    queries: int = 0
    # Queries of the last complete poll (claim and release; session checks are apart).
    last_tick_queries: int = 0
    # Queries of the session checks and authentications.
    session_queries: int = 0
    # Rows this process set dispatched (the poll, a catch-up; not replays or pages).
    claimed: int = 0
    # Rows read by the poll's cursor and by its looks at holes: each new row once per process,
    # whoever it is for.
    rows_read: int = 0
    # Notifications handed to at least one stream of this process by the poll.
    delivered: int = 0
    # Read and deleted events handed to the streams of a user (counted once per user).
    change_events: int = 0
    released: int = 0
    # Streams refused by the per-user or per-process cap.
    refused: int = 0
    sessions_ended: int = 0
    # Wake-ups: by a save or send in this process, by PostgreSQL's NOTIFY, by SQLite's
    # data_version; and how often data_version was read (not counted in `queries`).
    wakes: int = 0
    change_checks: int = 0
    errors: int = 0
    last_tick: float | None = field(default=None)
    # Seconds the last complete poll took.
    last_tick_duration: float = 0.0
