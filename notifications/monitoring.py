"""Health check and metrics of one daphne process, for load balancers and operators.

Both views are async: they run in daphne's event loop, where the process's hubs live, and read
their counters (hub.process_stats()) without a thread hop. Counters are per process.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.db import DatabaseError, connections
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from . import conf
from .hub import DATABASE_TIMEOUT, process_stats
from .models import Notification

logger = logging.getLogger(__name__)

# Seconds the health check waits for the database; load balancers' own timeouts are ~5 s.
HEALTH_DATABASE_TIMEOUT = 3.0
# A poll may wait up to the hub's database timeout; only a poll older than three intervals
# plus that is stuck.
STALE_MARGIN = float(DATABASE_TIMEOUT)

_LOOPBACK = frozenset({"127.0.0.1", "::1"})
# A request that came through a proxy on this host also has a loopback REMOTE_ADDR.
_FORWARDED = ("Forwarded", "X-Forwarded-For", "X-Real-IP")

PROMETHEUS = "text/plain; version=0.0.4; charset=utf-8"


_executor: ThreadPoolExecutor | None = None


def _database_executor() -> ThreadPoolExecutor:
    # Not the request's own thread: Django's middleware runs the response through that thread
    # too, so a query hanging there would hold the 503 back until the query ended. One thread,
    # so checks made while the database hangs queue (and time out) instead of piling up
    # threads and connections.
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="healthz")
    return _executor


def _check_database() -> None:
    try:
        # The app's own table by primary key: proves the schema is there, one index probe.
        Notification.objects.filter(pk=0).exists()
    finally:
        # No request ends in this thread to close it: never keep a connection (the router may
        # have read from another database than `default`; only this thread's are closed).
        connections.close_all()


def poller_state(stats: dict[str, Any], now: float) -> tuple[bool, str]:
    """Return whether the poll is healthy, and a word for it: idle, starting, ok or stale."""
    if not stats["polling"]:
        # No open stream, no poll: nothing to be late for.
        return True, "idle"
    last = stats["last_tick"]
    if last is None:
        return True, "starting"
    limit = 3 * conf.poll_interval() + STALE_MARGIN
    age = now - last
    if age > limit:
        return False, f"stale: last poll {age:.1f}s ago (limit {limit:.1f}s)"
    return True, "ok"


@never_cache
@require_safe
async def healthz(request: HttpRequest) -> JsonResponse:
    """Answer 200 when the database answers and the poll is not stuck, 503 with why otherwise.

    No login and nothing about users: load balancers call it.
    """
    database = "ok"
    try:
        async with asyncio.timeout(HEALTH_DATABASE_TIMEOUT):
            await asyncio.get_running_loop().run_in_executor(_database_executor(), _check_database)
    except TimeoutError:
        database = f"timeout: no answer within {HEALTH_DATABASE_TIMEOUT:g}s"
    except DatabaseError as exc:
        database = f"error: {type(exc).__name__}"
        logger.warning("Health check: the database failed", exc_info=True)
    poller_ok, poller = poller_state(process_stats(), time.monotonic())
    body: dict[str, str] = {"status": "ok", "database": database, "poller": poller}
    if database != "ok" or not poller_ok:
        reasons = [f"database {database}"] if database != "ok" else []
        if not poller_ok:
            reasons.append(f"poller {poller}")
        body["status"] = "error"
        body["reason"] = "; ".join(reasons)
        logger.warning("Health check failed: %s", body["reason"])
        return JsonResponse(body, status=503)
    return JsonResponse(body)


async def _may_read_metrics(request: HttpRequest) -> bool:
    # REMOTE_ADDR is the TCP peer (daphne without --proxy-headers); headers a client sends
    # prove nothing. A proxy on this host makes every visitor a loopback peer, though, so a
    # forwarded request must come from staff.
    if request.META.get("REMOTE_ADDR") in _LOOPBACK and not any(
        name in request.headers for name in _FORWARDED
    ):
        return True
    user = await request.auser()
    return bool(user.is_active and user.is_staff)


def _wants_json(request: HttpRequest) -> bool:
    if "format" in request.GET:
        return request.GET["format"] == "json"
    accept = request.headers.get("Accept", "")
    return "application/json" in accept and "text/plain" not in accept


def snapshot(now: float) -> dict[str, Any]:
    """Return this process's counters, the last poll's time as seconds ago."""
    stats = process_stats()
    last = stats.pop("last_tick", None)
    stats["last_tick_age"] = None if last is None else round(now - last, 6)
    return stats


# name, type, help, key in snapshot()
_PROMETHEUS_METRICS = [
    ("notifications_streams_open", "gauge", "Streams open in this process.", "streams"),
    ("notifications_users_connected", "gauge", "Users with an open stream.", "users"),
    ("notifications_polling", "gauge", "1 while the poll runs (a stream is open).", "polling"),
    ("notifications_polls_total", "counter", "Polls run.", "ticks"),
    ("notifications_queries_total", "counter", "Queries of the hub.", "queries"),
    ("notifications_dispatched_total", "counter", "Notifications claimed.", "claimed"),
    ("notifications_delivered_total", "counter", "Handed to a stream.", "delivered"),
    (
        "notifications_change_events_total",
        "counter",
        "Read and deleted events handed to a user's streams.",
        "change_events",
    ),
    ("notifications_released_total", "counter", "Claimed, sent nowhere, released.", "released"),
    (
        "notifications_sessions_ended_total",
        "counter",
        "Streams ended by a session check.",
        "sessions_ended",
    ),
    ("notifications_streams_refused_total", "counter", "Streams refused by a cap.", "refused"),
    ("notifications_poll_errors_total", "counter", "Polls that failed.", "errors"),
    (
        "notifications_poll_duration_seconds",
        "gauge",
        "Duration of the last poll.",
        "last_tick_duration",
    ),
    (
        "notifications_last_poll_age_seconds",
        "gauge",
        "Seconds since the last poll (NaN: none).",
        "last_tick_age",
    ),
]


def _prometheus(stats: dict[str, Any]) -> str:
    lines = []
    for name, kind, help_text, key in _PROMETHEUS_METRICS:
        value = stats.get(key)
        number = math.nan if value is None else float(value)
        lines += [
            f"# HELP {name} {help_text}",
            f"# TYPE {name} {kind}",
            f"{name} {'NaN' if math.isnan(number) else repr(number)}",
        ]
    return "\n".join(lines) + "\n"


@never_cache
@require_safe
async def metrics(request: HttpRequest) -> HttpResponse:
    """Return this process's counters as Prometheus text, or JSON with ?format=json.

    For staff users, and for requests from this host that did not come through a proxy.
    """
    if not await _may_read_metrics(request):
        return HttpResponseForbidden(
            "Metrics are for staff, or for requests from this host.\n",
            content_type="text/plain; charset=utf-8",
        )
    stats = snapshot(time.monotonic())
    if _wants_json(request):
        return HttpResponse(json.dumps(stats), content_type="application/json")
    return HttpResponse(_prometheus(stats), content_type=PROMETHEUS)
