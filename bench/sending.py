"""Admins' and operators' bulk work, timed: send_bulk, manage.py notify and purge_notifications.

    bin/bench sending --recipients 50000 --runs 3

On the benchmark's fresh database: --recipients users are bulk-created (no password hashing),
then, --runs times each:
  - `services.send_bulk(<all active users>, text)` in this process: one transaction;
  - `manage.py notify --all-active TEXT` in a new process, start-up included, with its peak
    RSS;
  - `manage.py purge_notifications --older-than 1d` in a new process, after back-dating and
    dispatching every row, start-up included.
"""

from __future__ import annotations

import resource
import statistics
import subprocess
import sys
import time
from datetime import timedelta
from typing import Any

from tools.daphne_runner import PROJECT

from .database import Database


def _command(database: Database, *args: str) -> tuple[float, float, str]:
    """Run a management command; return its seconds, its peak RSS (MB) and its output."""
    import os

    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=PROJECT,
        env={**os.environ, "DATABASE_URL": database.server_url},
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    seconds = time.perf_counter() - started
    # ru_maxrss of children is the largest of any child so far: report it only if it grew.
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return seconds, max(peak, before) / 1024, done.stdout.strip()


def sending(database: Database, recipients: int, runs: int) -> dict[str, Any]:
    from django.contrib.auth import get_user_model
    from django.db.models import F

    from notifications import services
    from notifications.models import Notification

    user_model = get_user_model()
    user_model.objects.bulk_create(
        [user_model(username=f"recipient{i}", password="!") for i in range(recipients)],
        batch_size=5000,
    )
    timings: dict[str, list[float]] = {"send_bulk": [], "notify": [], "purge": []}
    notify_rss: list[float] = []
    outputs: dict[str, str] = {}
    for run in range(runs):
        started = time.perf_counter()
        created = services.send_bulk(user_model.objects.filter(is_active=True), f"run {run}")
        timings["send_bulk"].append(time.perf_counter() - started)
        assert len(created) == recipients, (len(created), recipients)

        seconds, rss, outputs["notify"] = _command(
            database, "notify", "--all-active", f"notify run {run}"
        )
        timings["notify"].append(seconds)
        notify_rss.append(rss)

        Notification.objects.update(dispatched=True, created=F("created") - timedelta(days=2))
        seconds, _, outputs["purge"] = _command(
            database, "purge_notifications", "--older-than", "1d"
        )
        timings["purge"].append(seconds)
        assert not Notification.objects.exists(), "purge left rows behind"
        print(
            f"run {run + 1}/{runs}: send_bulk {timings['send_bulk'][-1]:.2f} s, "
            f"notify {timings['notify'][-1]:.2f} s, purge {timings['purge'][-1]:.2f} s",
            flush=True,
        )
    return {
        "recipients": recipients,
        "runs": runs,
        "seconds": timings,
        "median_seconds": {k: statistics.median(v) for k, v in timings.items()},
        "notify_peak_rss_mb": max(notify_rss),
        "outputs": outputs,
    }
