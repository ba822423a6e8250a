"""The daphne processes under benchmark: started with the bench settings, read from /proc."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tools.daphne_runner import DaphneServer, start_daphne

from .client import ClientPool
from .database import Database

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def server_env(database: Database, application_name: str, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "bench.settings",
        "DATABASE_URL": database.for_server(application_name),
        "DEBUG": "false",
        "SECRET_KEY": os.environ.get("SECRET_KEY") or "benchmark-only-secret-key",
        # The project's .env (a developer's settings) must not change what is measured.
        "ENV_FILE": os.devnull,
        **extra,
    }
    return env


@contextlib.contextmanager
def serve(
    database: Database,
    application_name: str,
    log: Path,
    *,
    port: int = 0,
    backlog: int | None = None,
    application: str = "site_config.asgi:application",
    **extra: str,
) -> Iterator[DaphneServer]:
    """Run one daphne process with the bench settings; stop it on exit, whatever happens.

    On `port` (a free one by default), listening with `backlog` (daphne's default without it).
    """
    env = server_env(database, application_name, **extra)
    with start_daphne(env, log, port=port, backlog=backlog, application=application) as server:
        yield server


def listen_backlog(port: int) -> int | None:
    """Return the listen queue length of the socket listening on 127.0.0.1:`port` (ss -ltn).

    For a listening socket, ss shows it as Send-Q. None if ss is missing or nothing listens.
    """
    try:
        out = subprocess.run(
            ["ss", "-ltnH", f"sport = :{port}"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[3].endswith(f":{port}"):
            return int(fields[2])
    return None


def cpu_seconds(pid: int) -> float:
    """Return the process's user + system CPU time so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # Fields 14 and 15 of proc(5), counted from the state field (3).
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def cpu_of(pids: Sequence[int]) -> list[float | None]:
    """Return each process's CPU time so far (`cpu_seconds`); None for one that is gone."""
    times: list[float | None] = []
    for pid in pids:
        try:
            times.append(cpu_seconds(pid))
        except OSError:
            times.append(None)
    return times


def cpu_spent(before: Sequence[float | None], after: Sequence[float | None]) -> list[float | None]:
    """Each process's CPU seconds between two `cpu_of` readings (None where either is None).

    /proc counts in clock ticks (CLOCK_TICKS a second, 100 on Linux): 10 ms steps.
    """
    return [
        None if a is None or b is None else round(b - a, 3)
        for a, b in zip(before, after, strict=True)
    ]


class RoundCpu:
    """The CPU seconds a run's servers, and its client processes together, spend in a round.

    `start()` reads /proc before the round, `spent()` after it; a process gone meanwhile is
    None (a server) or left out (a client).
    """

    def __init__(self, daphnes: Sequence[DaphneServer], pool: ClientPool) -> None:
        self._servers = [server.process.pid for server in daphnes]
        self._clients = [process.pid or 0 for process in pool.processes]
        self._before: tuple[list[float | None], list[float | None]] = ([], [])

    def start(self) -> None:
        self._before = cpu_of(self._servers), cpu_of(self._clients)

    def spent(self) -> dict[str, Any]:
        servers, clients = self._before
        return {
            "server_cpu_s": cpu_spent(servers, cpu_of(self._servers)),
            "client_cpu_s": round(
                sum(c or 0.0 for c in cpu_spent(clients, cpu_of(self._clients))), 3
            ),
        }


def stats(server: DaphneServer) -> dict[str, Any]:
    """Return the server's /bench/stats (its counters; no database touched)."""
    with urllib.request.urlopen(f"{server.url}/bench/stats", timeout=10) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


def database_connections(
    server: DaphneServer, database: Database, application_name: str
) -> tuple[int, int]:
    """Return the database connections the server holds open, and all but this process's.

    PostgreSQL: its backends in pg_stat_activity by application_name, and all backends of the
    database (a connection opened without the name is in the second figure only); SQLite: its
    open descriptors on the database file, twice.
    """
    if database.vendor == "sqlite":
        count = server.open_files(database.name)
        return count, count
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FILTER (WHERE application_name = %s), count(*) "
            "FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            [application_name, database.name],
        )
        row = cursor.fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)
