"""Benchmark the notification stream against the naive design, side by side.

    bin/bench                                   # = python -m bench, SQLite in a temporary folder
    bin/bench --streams 100,1000 --json docs/bench-sqlite.json --chart docs/bench-sqlite.png
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench_notifications bin/bench
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench_notifications \\
        bin/bench churn --processes 2 --notifications 10000

The measurement run. For each N (--streams, default 100,1000,5000,10000) and each design
(--design: `ours`, the project's stream, and `naive`, the one-query-per-stream-per-second
reference in bench/naive.py), on a fresh daphne process started on 127.0.0.1 with
bench.settings (the site's settings plus a statement counter and /bench/stats):
  - N users and logged-in sessions are made directly, and client processes (asyncio, one per
    --clients-per-process streams) open one stream per user, --concurrency at a time;
  - idle window (--idle s, streams open, nothing sent): the server's CPU share (utime+stime
    from /proc, % of one core), RSS per stream (against the same server warmed up with 0
    streams), OS threads, open database connections (pg_stat_activity by application_name;
    on SQLite the descriptors on the database file), queries/s (PRAGMA data_version change
    checks counted apart);
  - delivery latency, a row's `created` to its arrival at the client: --other rows created by
    this process (another process than the server) one every 20-50 ms, then --admin rows
    posted through the admin's add form; p50/p95/p99/max and how many arrived.
The naive design runs up to --naive-max streams ("not run" beyond). A design that fails
(streams refused, rows undelivered) is recorded and the run goes on.

The deletions run (`deletions`): what recording deletions for the streams costs a purge
(bench/deletions.py).

The churn run (`churn`, PostgreSQL): --processes daphne processes, --users users with
--clients-per-user clients each, connecting to a random process and disconnecting at random,
reconnecting with Last-Event-ID from the newest id they received, while --notifications rows
are created over --duration s; then every client reconnects once more and stays until quiet.
Verdict: rows claimed twice (the servers' claim log, and rows received live from two
processes), rows lost (dispatched, never received by a client of their user), rows left
undispatched, replays.

On PostgreSQL the database named in DATABASE_URL (its name must start with "bench") is dropped
and recreated, with a role of the same name for the servers limited to --pg-connections
connections (a shared server keeps its other connections), and dropped at the end. Every
process the benchmark starts is stopped, whatever happens.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

from . import report
from .database import Database, create, drop


def _ints(value: str) -> list[int]:
    return [int(v.replace("_", "")) for v in value.split(",") if v]


def _designs(value: str) -> list[str]:
    designs = [v for v in value.split(",") if v]
    unknown = set(designs) - {"ours", "naive"}
    if unknown or not designs:
        raise argparse.ArgumentTypeError(f"designs are ours and naive, not {value!r}")
    return designs


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--json", type=Path, help="write everything measured to this file")
    parser.add_argument("--logs", type=Path, help="keep the daphne logs in this folder")
    parser.add_argument(
        "--pg-connections",
        type=int,
        default=50,
        help="PostgreSQL: most connections the servers' role may hold (0: no limit; default 50)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("-v", "--verbose", action="store_true")
    commands = parser.add_subparsers(dest="command")
    run = commands.add_parser("run", help="the measurement run (the default)")
    churn = commands.add_parser("churn", help="several processes, clients coming and going")
    sending = commands.add_parser(
        "sending", help="send_bulk, manage.py notify and purge_notifications, timed"
    )
    deletions = commands.add_parser(
        "deletions", help="purge_notifications with and without the deletion trigger, timed"
    )
    for sub in (run, churn, sending, deletions):
        for action in parser._actions:
            if action.dest not in ("help", "command"):
                sub._add_action(action)

    run.add_argument("--streams", type=_ints, default=[100, 1000, 5000, 10000])
    run.add_argument(
        "--design",
        type=_designs,
        default=["ours", "naive"],
        help="comma-separated: ours, naive (default both)",
    )
    run.add_argument("--naive-max", type=int, default=2000)
    run.add_argument("--idle", type=float, default=16.0, help="idle window, s (default 16)")
    run.add_argument("--settle", type=float, default=3.0)
    run.add_argument("--other", type=int, default=200, help="rows from another process")
    run.add_argument("--admin", type=int, default=50, help="rows through the admin form")
    run.add_argument("--clients-per-process", type=int, default=2500)
    run.add_argument("--concurrency", type=int, default=50, help="streams opening at once")
    run.add_argument("--deliver-timeout", type=float, default=15.0)
    run.add_argument(
        "--flood", type=int, default=50, help="streams one account tries to open (first N only)"
    )
    run.add_argument(
        "--slow-mb", type=int, default=10, help="MB sent to a client that does not read (first N)"
    )
    run.add_argument("--chart", type=Path, help="draw the chart (PNG) here")

    churn.add_argument("--processes", type=int, default=2)
    churn.add_argument("--users", type=int, default=200)
    churn.add_argument("--clients-per-user", type=int, default=2)
    churn.add_argument("--notifications", type=int, default=10_000)
    churn.add_argument("--duration", type=float, default=60.0)
    churn.add_argument(
        "--stay",
        type=lambda v: tuple(map(float, v.split(","))),
        default=(0.5, 5.0),
        help="seconds a client stays connected: min,max (default 0.5,5)",
    )
    churn.add_argument(
        "--pause", type=float, default=1.0, help="most seconds between two connections"
    )
    churn.add_argument("--quiet", type=float, default=4.0, help="settle: seconds without events")

    sending.add_argument("--recipients", type=int, default=50_000)
    sending.add_argument("--runs", type=int, default=3)

    deletions.add_argument("--rows", type=int, default=100_000)
    deletions.add_argument("--users", type=int, default=10_000)
    deletions.add_argument("--rounds", type=int, default=4)

    if not argv or argv[0] not in ("run", "churn", "sending", "deletions", "-h", "--help"):
        argv = ["run", *argv]
    return parser.parse_args(argv)


def _stop_on_sigterm() -> None:
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def main(argv: list[str]) -> int:
    args = parse(argv)
    _stop_on_sigterm()
    os.environ.setdefault("SECRET_KEY", "benchmark-only-secret-key")
    os.environ["DEBUG"] = "false"
    os.environ["ENV_FILE"] = os.devnull
    os.environ["DJANGO_SETTINGS_MODULE"] = "site_config.settings"
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp_name:
        tmp = Path(tmp_name)
        logs = args.logs or tmp
        logs.mkdir(parents=True, exist_ok=True)
        url = os.environ.get("DATABASE_URL", "")
        database: Database | None = None
        outcome: dict[str, Any]
        try:
            database = create(url, tmp, args.pg_connections)
            os.environ["DATABASE_URL"] = database.url
            import django

            django.setup()
            from .database import version

            info = report.machine(version())
            if args.command == "deletions":
                from .deletions import deletions

                outcome = deletions(database, args.rows, args.users, args.rounds)
                print(json.dumps(outcome["median_seconds"], indent=2))
                document = {"machine": info, **outcome}
                ok = True
            elif args.command == "sending":
                from .sending import sending

                outcome = sending(database, args.recipients, args.runs)
                print(json.dumps(outcome["median_seconds"], indent=2))
                document = {"machine": info, **outcome}
                ok = True
            elif args.command == "churn":
                from .churn import Options as ChurnOptions
                from .churn import churn

                outcome = churn(
                    database,
                    ChurnOptions(
                        processes=args.processes,
                        users=args.users,
                        clients_per_user=args.clients_per_user,
                        notifications=args.notifications,
                        duration=args.duration,
                        stay=args.stay,
                        pause=args.pause,
                        quiet=args.quiet,
                        seed=args.seed,
                    ),
                    logs,
                )
                print(json.dumps(outcome["verdict"], indent=2))
                document = {"machine": info, **outcome}
                ok = outcome["verdict"]["ok"]
            else:
                from .run import Options, run

                results = run(
                    database,
                    Options(
                        streams=args.streams,
                        designs=args.design,
                        naive_max=args.naive_max,
                        idle=args.idle,
                        settle=args.settle,
                        other=args.other,
                        admin=args.admin,
                        clients_per_process=args.clients_per_process,
                        concurrency=args.concurrency,
                        deliver_timeout=args.deliver_timeout,
                        flood=args.flood,
                        slow_mb=args.slow_mb,
                        seed=args.seed,
                        verbose=args.verbose,
                    ),
                    logs,
                )
                print(
                    f"\n{info['database']}, {info['cpu']} ({info['cores']} cores), "
                    f"Python {info['python']}, Django {info['django']}, daphne {info['daphne']}\n"
                )
                print(report.table(results))
                document = {"machine": info, "results": results}
                if args.chart:
                    report.chart(
                        results,
                        args.chart,
                        f"{info['database']} · {info['cpu']} × {info['cores']} cores · "
                        f"{info['date'][:10]} · commit {info['commit']}",
                    )
                ok = True
            if args.json:
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps(document, indent=2) + "\n")
            return 0 if ok else 1
        finally:
            if database is not None:
                try:
                    from django.db import connections

                    connections.close_all()
                except Exception:  # noqa: BLE001, S110 - Django may not be set up yet
                    pass
                if database.vendor == "postgresql" and not os.environ.get("BENCH_KEEP_DB"):
                    drop(database)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
