"""The app's settings, read when asked for (never at import time), with their defaults."""

from __future__ import annotations

import resource

from django.conf import settings


def poll_interval() -> float:
    """Seconds between two claim queries of a process's hub."""
    return float(getattr(settings, "NOTIFICATIONS_POLL_INTERVAL", 1.0))


def recent_window() -> float:
    """Seconds back from now in which an undispatched notification is delivered live."""
    return float(getattr(settings, "NOTIFICATIONS_RECENT_WINDOW", 60.0))


def keepalive() -> float:
    """Seconds of silence after which a stream sends a keepalive comment."""
    return float(getattr(settings, "NOTIFICATIONS_KEEPALIVE", 15.0))


def replay_limit() -> int:
    """Most notifications a stream replays after a Last-Event-ID."""
    return int(getattr(settings, "NOTIFICATIONS_REPLAY_LIMIT", 100))


def retry_milliseconds() -> int:
    """Reconnection delay a stream asks the browser for, in its opening `retry:` field."""
    return int(getattr(settings, "NOTIFICATIONS_RETRY", 2000))


def session_check_interval() -> float:
    """Seconds between two checks that the sessions behind open streams are still valid."""
    return float(getattr(settings, "NOTIFICATIONS_SESSION_CHECK_INTERVAL", 2.0))


def max_streams_per_user() -> int:
    """Most streams one user may hold open in one process; one more is answered with 429."""
    return int(getattr(settings, "NOTIFICATIONS_MAX_STREAMS_PER_USER", 10))


def max_streams() -> int:
    """Most streams one process holds open; one more is answered with 429.

    0 (the default) means: as many as the process's open-file limit leaves room for.
    """
    return int(getattr(settings, "NOTIFICATIONS_MAX_STREAMS", 0))


def max_length() -> int:
    """Most characters a notification's text may have."""
    return int(getattr(settings, "NOTIFICATIONS_MAX_LENGTH", 10_000))


def stream_max_bytes() -> int:
    """Bytes after which a stream ends itself and the client reconnects (0: no limit).

    Bounds what a client that stops reading can leave buffered in the server.
    """
    return int(getattr(settings, "NOTIFICATIONS_STREAM_MAX_BYTES", 1_048_576))


def effective_max_streams() -> int:
    """NOTIFICATIONS_MAX_STREAMS, or when it is 0, what the open-file limit leaves room for.

    Each stream holds one socket; a tenth of the limit (at least 64) stays free for the
    database, log files and ordinary requests.
    """
    configured = max_streams()
    if configured > 0:
        return configured
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1_000_000
    return max(soft - max(64, soft // 10), 1)


def change_check_interval() -> float:
    """Seconds between two looks at SQLite's data_version (commits by other processes)."""
    return float(getattr(settings, "NOTIFICATIONS_CHANGE_CHECK_INTERVAL", 0.05))


def gc_freeze() -> bool:
    """Whether the hub keeps the streams' long-lived objects out of full garbage collections.

    Off unless the site turns it on: gc.freeze() acts on the whole process, not on the app.
    """
    return bool(getattr(settings, "NOTIFICATIONS_GC_FREEZE", False))


def change_retention() -> float:
    """Seconds a read or deleted change stays in the change log before it is pruned."""
    return float(getattr(settings, "NOTIFICATIONS_CHANGE_RETENTION", 600.0))


def listen_database_url() -> str:
    """A libpq connection URL for PostgreSQL's LISTEN alone, or "" to use the default database.

    For a site whose DATABASE_URL goes through a pooler in transaction mode (PgBouncer), which
    breaks LISTEN: a URL (not a DATABASES-style dict) because psycopg takes it as it is, and it
    is written like the DATABASE_URL beside it.
    """
    return str(getattr(settings, "NOTIFICATIONS_LISTEN_DATABASE_URL", "") or "")
