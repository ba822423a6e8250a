from __future__ import annotations

import os
from pathlib import Path

from django.http import HttpRequest, JsonResponse

from . import counters


async def stats(request: HttpRequest) -> JsonResponse:
    """Return the process's counters; touches no database (it would count itself)."""
    from notifications import hub

    process_stats = getattr(hub, "process_stats", None)
    status = {}
    # procfs: no disk behind it, nothing to wait for.
    for line in Path("/proc/self/status").read_text().splitlines():  # noqa: ASYNC240
        key, _, value = line.partition(":")
        if key in ("Threads", "VmRSS"):
            status[key] = int(value.split()[0])
    return JsonResponse(
        {
            "pid": os.getpid(),
            "statements": counters.snapshot(),
            "hub": process_stats() if process_stats else None,
            "threads": status.get("Threads"),
            "rss_kib": status.get("VmRSS"),
        }
    )
