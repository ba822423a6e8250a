"""The app's settings, read when asked for (never at import time), with their defaults."""

from __future__ import annotations

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
