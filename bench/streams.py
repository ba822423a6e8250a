"""Measure one daphne process holding N open notification streams.

    python -m bench.streams --streams 1,500                       # SQLite (a temporary file)
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench_notifications \
        python -m bench.streams --streams 1,500                   # PostgreSQL (database recreated)

For each N: OS threads, RSS and open database connections of the daphne process (connections
from pg_stat_activity on PostgreSQL, open handles on the database file on SQLite), with N
streams open and idle, and the delivery of one notification per stream created from this
process (another process than the server). Everything it starts, it stops.

BENCH_SERVER_LOG=path keeps the server's log; BENCH_DEBUG=1 prints the undelivered rows when a
run falls short.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import AsyncExitStack, suppress
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from tests.support import PROJECT, DaphneServer, start_daphne


def prepare_database(url: str) -> None:
    if url.startswith("postgres"):
        import psycopg

        parts = urlsplit(url)
        name = parts.path.lstrip("/")
        with psycopg.connect(
            host=parts.hostname,
            port=parts.port or 5432,
            user=parts.username or "postgres",
            password=parts.password or "",
            dbname="postgres",
            autocommit=True,
        ) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=PROJECT, check=True
    )


def make_sessions(count: int) -> list[tuple[int, str]]:
    """Create `count` users with a logged-in session each, without hashing passwords."""
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.auth.models import User
    from django.contrib.sessions.backends.db import SessionStore
    from django.contrib.sessions.models import Session
    from django.utils import timezone
    from django.utils.crypto import get_random_string

    prefix = get_random_string(6)
    users = User.objects.bulk_create(
        [User(username=f"bench-{prefix}-{i}", password="!") for i in range(count)]
    )
    store = SessionStore()
    expire = timezone.now() + timezone.timedelta(days=1)
    sessions = []
    rows = []
    for user in users:
        key = get_random_string(32, "abcdefghijklmnopqrstuvwxyz0123456789")
        data = store.encode(
            {
                SESSION_KEY: str(user.pk),
                BACKEND_SESSION_KEY: "django.contrib.auth.backends.ModelBackend",
                HASH_SESSION_KEY: user.get_session_auth_hash(),
            }
        )
        rows.append(Session(session_key=key, session_data=data, expire_date=expire))
        sessions.append((user.pk, key))
    Session.objects.bulk_create(rows, batch_size=500)
    return sessions


async def open_stream(
    stack: AsyncExitStack,
    http: httpx.AsyncClient,
    key: str,
    queue: asyncio.Queue[tuple[str, float]],
) -> None:
    response = await stack.enter_async_context(
        http.stream("GET", "/notifications/stream/", cookies={"sessionid": key})
    )
    if response.status_code != 200:
        raise RuntimeError(f"stream answered {response.status_code}")
    lines = response.aiter_lines()
    await anext(lines)  # the retry field: the stream is open

    async def read() -> None:
        async for line in lines:
            if line.startswith("data: "):
                await queue.put((line, time.time()))

    task = asyncio.create_task(read())
    stack.push_async_callback(_cancel, task)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with suppress(asyncio.CancelledError, httpx.HTTPError):
        await task


async def measure(
    server: DaphneServer, sessions: list[tuple[int, str]], n: int, db: str
) -> dict[str, Any]:
    from asgiref.sync import sync_to_async
    from django.db import connection

    from notifications.models import Notification

    limits = httpx.Limits(max_connections=n + 10, max_keepalive_connections=0)
    timeout = httpx.Timeout(30, read=None)
    queue: asyncio.Queue[tuple[str, float]] = asyncio.Queue()
    async with AsyncExitStack() as stack:
        http = await stack.enter_async_context(
            httpx.AsyncClient(base_url=server.url, limits=limits, timeout=timeout)
        )
        for start in range(0, n, 50):
            batch = sessions[start : min(start + 50, n)]
            await asyncio.gather(*(open_stream(stack, http, key, queue) for _, key in batch))
        # Let the poll reach its steady state before reading the process.
        await asyncio.sleep(3)
        status = server.status()

        def connections() -> int:
            if connection.vendor != "postgresql":
                return server.open_files(connection.settings_dict["NAME"])
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid()"
                )
                return int(cursor.fetchone()[0])

        open_connections = await sync_to_async(connections)()

        def send() -> dict[int, float]:
            rows = Notification.objects.bulk_create(
                [Notification(user_id=user_id, text="bench") for user_id, _ in sessions[:n]]
            )
            return {r.pk: r.created.timestamp() for r in rows}

        created = await sync_to_async(send)()
        latencies = []
        received: list[int] = []
        try:
            for _ in range(n):
                line, arrived = await asyncio.wait_for(queue.get(), 30)
                pk = json.loads(line[6:])["id"]
                received.append(pk)
                latencies.append(arrived - created[pk])
        except TimeoutError:
            print(f"{n} streams: only {len(latencies)} of {n} delivered in 30 s", file=sys.stderr)
            if os.environ.get("BENCH_DEBUG"):
                got = set(received)
                missing = [pk for pk in created if pk not in got]
                rows = await sync_to_async(
                    lambda: list(
                        Notification.objects.filter(pk__in=missing).values(
                            "pk", "user_id", "dispatched", "dispatched_at", "created"
                        )
                    )
                )()
                print(rows, file=sys.stderr)
                print(
                    "ended streams:",
                    sum(1 for t in asyncio.all_tasks() if t.done()),
                    file=sys.stderr,
                )
                print("tasks:", len(asyncio.all_tasks()), file=sys.stderr)
        latencies.sort()
    return {
        "database": db,
        "streams": n,
        "threads": status["Threads"],
        "rss_mb": round(status["VmRSS"] / 1024, 1),
        "db_connections": open_connections,
        "delivered": len(latencies),
        "latency_p50_ms": round(latencies[len(latencies) // 2] * 1000) if latencies else None,
        "latency_max_ms": round(latencies[-1] * 1000) if latencies else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--streams", default="1,500", help="comma-separated stream counts")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    counts = [int(c) for c in args.streams.split(",")]

    tmp = tempfile.TemporaryDirectory()
    url = os.environ.get("DATABASE_URL") or f"sqlite:///{tmp.name}/bench.sqlite3"
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "DEBUG": "false",
        "SECRET_KEY": os.environ.get("SECRET_KEY", "benchmark-only-secret-key"),
    }
    os.environ.update(env)
    prepare_database(url)
    sys.path.insert(0, str(PROJECT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "site_config.settings")
    import django

    django.setup()
    sessions = make_sessions(max(counts))
    from django.db import connection

    # Counted connections are the server's: this thread's goes before the measuring starts.
    connection.close()

    db = connection.vendor
    results = []
    server_log = Path(os.environ.get("BENCH_SERVER_LOG") or Path(tmp.name) / "daphne.log")
    with start_daphne(env, server_log) as server:
        for n in [0, *counts]:
            if n == 0:
                time.sleep(1)
                s = server.status()
                results.append(
                    {
                        "database": db,
                        "streams": 0,
                        "threads": s["Threads"],
                        "rss_mb": round(s["VmRSS"] / 1024, 1),
                    }
                )
                continue
            results.append(asyncio.run(measure(server, sessions, n, db)))
    connection.close()
    columns = [
        "database",
        "streams",
        "threads",
        "rss_mb",
        "db_connections",
        "delivered",
        "latency_p50_ms",
        "latency_max_ms",
    ]
    print(" | ".join(columns))
    for row in results:
        print(" | ".join(str(row.get(c, "")) for c in columns))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    tmp.cleanup()


if __name__ == "__main__":
    main()
