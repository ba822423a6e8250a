"""Benchmark the notification stream against the naive design, side by side.

    bin/bench                                   # = python -m bench, SQLite in a temporary folder
    bin/bench --streams 100,1000 --json docs/bench-sqlite.json --chart docs/bench-sqlite.png
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench_notifications bin/bench
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench_notifications \\
        bin/bench churn --processes 2 --notifications 10000
    DATABASE_URL=... bin/bench faults       # 3 processes, one killed, connections cut
    DATABASE_URL=... bin/bench fanout       # every user with a stream on each of 2 processes
    DATABASE_URL=... bin/bench burst        # 100,000 rows for users not connected
    DATABASE_URL=... bin/bench broadcast    # one INSERT for 10,000 connected users
    bin/bench floor                         # the same broadcast through daphne alone, no hub
    DATABASE_URL=... bin/bench --design ours --streams 12000,14000,16000,18000 --until-p99 150

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

The fault run (`faults`, PostgreSQL): --processes daphne processes (3) listening with a
--backlog of 4096; --users users with 2-3 clients each (--clients-per-user), each client
pinned to its own process, staying --stay s and coming back with Last-Event-ID (the last id it
read, as a browser), while --notifications rows are created over --duration s. At --kill-at
of the duration process 0 is killed with SIGKILL and restarted on its port --down s later
(its clients retry every 50-500 ms: the reconnect storm); at --cut-at every server
connection is cut with pg_terminate_backend. Then every client comes back (again after an
error) until it has its user's newest row, and --quiet s more (at most 120 s).
Verdict per stream: every row of its user created while it was open (--grace s before its
end at the latest) or after its cursor, received exactly once; none of another user; none
at or below its cursor. Per client: every row of its user received, none twice. Connections
refused, reset or unanswered other than while the killed process was down are failures.

The scale runs (PostgreSQL), streams opened --concurrency at a time:
  - `fanout`: --users users, each with a stream on each of --processes processes (2); idle
    CPU and queries/s per process over --idle s; then --rows rows, 20-50 ms apart, to random
    users: every stream of the user must get each, once; latency from `created` to arrival;
  - `burst`: --users connected users (1,000) on --processes processes (1); rows to them
    20-50 ms apart for --before s, then --burst rows (100,000) for --offline-users users who
    are not connected, inserted in one transaction, then rows to the connected users for
    --after s: p99 before and after, and the rows each process's poll read (the hub's
    `rows_read` counter; n/a where the hub has none);
  - `broadcast`: --users connected users (10,000); --rounds times, one INSERT ... SELECT
    creating a row for each: from the commit to the first, median and last arrival.

The floor run (`floor`, any database): --streams streams (10,000) on --processes daphne
processes (1), and
--rounds times one event fired at all of them, on a bare ASGI stream (`raw`: daphne and
Twisted alone) and on a Django view's StreamingHttpResponse (`django`): what a broadcast's
writes cost without the hub, and the CPU the servers spent on them (bench/floor.py).
The measurement run's --until-p99 MS steps N up and stops after the first N where `ours`
refuses streams or its p99 (rows from another process) exceeds MS; it reports the most
streams held within it.

Exit status 1: a verdict failed (churn, faults, and rows lost, doubled or misdelivered in the
scale runs); targets missed are reported, not failed.

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


def _pair(value: str) -> tuple[float, float]:
    low, _, high = value.partition(",")
    try:
        pair = (float(low), float(high or low))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN,MAX, not {value!r}") from None
    if pair[0] > pair[1] or pair[0] < 0:
        raise argparse.ArgumentTypeError(f"expected 0 <= MIN <= MAX, not {value!r}")
    return pair


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
    fault_run = commands.add_parser(
        "faults", help="devices on 3 processes; one killed and restarted, connections cut"
    )
    fanout = commands.add_parser(
        "fanout", help="every user with a stream on each process: every stream gets every row"
    )
    burst = commands.add_parser(
        "burst", help="a burst of rows for users not connected: the connected users' latency"
    )
    broadcast = commands.add_parser(
        "broadcast", help="one INSERT of a row for every connected user: the last arrival"
    )
    scale_modes = (fanout, burst, broadcast)
    floor_run = commands.add_parser(
        "floor", help="one event to 10,000 streams through daphne alone: a broadcast's floor"
    )
    deletions = commands.add_parser(
        "deletions", help="purge_notifications with and without the deletion trigger, timed"
    )
    for sub in (run, churn, sending, deletions, fault_run, floor_run, *scale_modes):
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
    run.add_argument(
        "--until-p99",
        type=float,
        metavar="MS",
        help="stepped run: stop after the first N where `ours` refuses streams or its p99 "
        "(rows from another process) exceeds MS, and report the most streams held within it",
    )
    run.add_argument(
        "--backlog",
        type=int,
        default=4096,
        help="the server's listen queue (0: daphne's own, 50)",
    )

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

    fault_run.add_argument("--processes", type=int, default=3)
    fault_run.add_argument("--users", type=int, default=300)
    fault_run.add_argument(
        "--clients-per-user",
        type=lambda v: tuple(int(x) for x in _pair(v)),
        default=(2, 3),
        help="clients (devices) per user, each on another process: min,max (default 2,3)",
    )
    fault_run.add_argument("--notifications", type=int, default=10_000)
    fault_run.add_argument("--duration", type=float, default=60.0)
    fault_run.add_argument(
        "--stay", type=_pair, default=(5.0, 20.0), help="seconds a client stays: min,max"
    )
    fault_run.add_argument(
        "--pause", type=float, default=1.0, help="most seconds a client stays away"
    )
    fault_run.add_argument(
        "--retry",
        type=_pair,
        default=(0.05, 0.5),
        help="seconds before trying again when a stream ended or did not open: min,max",
    )
    fault_run.add_argument(
        "--quiet", type=float, default=4.0, help="settle: seconds without events"
    )
    fault_run.add_argument(
        "--grace",
        type=float,
        default=2.0,
        help="rows created this close to a stream's end may still be on their way (default 2)",
    )
    fault_run.add_argument("--no-kill", dest="kill", action="store_false")
    fault_run.add_argument(
        "--kill-at", type=float, default=0.3, help="SIGKILL server 0 at this share of --duration"
    )
    fault_run.add_argument("--down", type=float, default=2.0, help="seconds before the restart")
    fault_run.add_argument("--no-cut", dest="cut", action="store_false")
    fault_run.add_argument(
        "--cut-at",
        type=float,
        default=0.6,
        help="pg_terminate_backend the servers' connections at this share of --duration",
    )
    fault_run.add_argument(
        "--backlog",
        type=int,
        default=4096,
        help="the servers' listen queue (0: daphne's default, 50; the kernel caps it at "
        "net.core.somaxconn)",
    )

    for sub, processes, users in ((fanout, 2, 5000), (burst, 1, 1000), (broadcast, 1, 10_000)):
        sub.add_argument("--processes", type=int, default=processes)
        sub.add_argument(
            "--users",
            type=int,
            default=users,
            help=f"connected users (default {users})"
            + (", each with a stream on every process" if sub is fanout else ""),
        )
        sub.add_argument("--concurrency", type=int, default=50, help="streams opening at once")
        sub.add_argument("--clients-per-process", type=int, default=2500)
        sub.add_argument("--settle", type=float, default=3.0)
        sub.add_argument("--deliver-timeout", type=float, default=15.0)
        sub.add_argument(
            "--backlog", type=int, default=4096, help="the servers' listen queue (0: daphne's)"
        )
    fanout.add_argument("--idle", type=float, default=16.0, help="idle window, s (default 16)")
    fanout.add_argument("--rows", type=int, default=500, help="rows created, 20-50 ms apart")
    burst.add_argument("--burst", type=int, default=100_000, help="rows in the burst")
    burst.add_argument("--offline-users", type=int, default=1000)
    burst.add_argument(
        "--before", type=float, default=20.0, help="seconds of rows before the burst"
    )
    burst.add_argument("--after", type=float, default=30.0, help="seconds of rows after it")
    broadcast.add_argument("--rounds", type=int, default=3)

    floor_run.add_argument("--streams", type=int, default=10_000)
    floor_run.add_argument("--processes", type=int, default=1)
    floor_run.add_argument("--rounds", type=int, default=3)
    floor_run.add_argument(
        "--variant",
        dest="variants",
        type=_variants,
        default=["raw", "django"],
        help="raw, django or both (default raw,django)",
    )
    floor_run.add_argument("--concurrency", type=int, default=50, help="streams opening at once")
    floor_run.add_argument("--clients-per-process", type=int, default=2500)
    floor_run.add_argument("--settle", type=float, default=3.0)
    floor_run.add_argument("--deliver-timeout", type=float, default=15.0)
    floor_run.add_argument(
        "--backlog", type=int, default=4096, help="the server's listen queue (0: daphne's)"
    )

    deletions.add_argument("--rows", type=int, default=100_000)
    deletions.add_argument("--users", type=int, default=10_000)
    deletions.add_argument("--rounds", type=int, default=4)

    modes = (
        "run",
        "churn",
        "sending",
        "deletions",
        "faults",
        "fanout",
        "burst",
        "broadcast",
        "floor",
    )
    if not argv or argv[0] not in (*modes, "-h", "--help"):
        argv = ["run", *argv]
    return parser.parse_args(argv)


def _variants(value: str) -> list[str]:
    """--variant: raw, django or both, comma-separated; an unknown name is an error."""
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = sorted(set(names) - {"raw", "django"})
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown variant {', '.join(unknown) or repr(value)}: choose raw, django or raw,django"
        )
    return list(dict.fromkeys(names))


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
            elif args.command == "faults":
                from .faults import Options as FaultOptions
                from .faults import faults

                outcome = faults(
                    database,
                    FaultOptions(
                        processes=args.processes,
                        users=args.users,
                        clients_per_user=args.clients_per_user,
                        notifications=args.notifications,
                        duration=args.duration,
                        stay=args.stay,
                        pause=args.pause,
                        retry=args.retry,
                        quiet=args.quiet,
                        grace=args.grace,
                        kill=args.kill,
                        kill_at=args.kill_at,
                        down=args.down,
                        cut=args.cut,
                        cut_at=args.cut_at,
                        backlog=args.backlog,
                        seed=args.seed,
                    ),
                    logs,
                )
                summary = {
                    k: v
                    for k, v in outcome["verdict"].items()
                    if k not in ("failed_examples", "live_latency_over_time")
                }
                summary["storm"] = {
                    k: v for k, v in summary["storm"].items() if k != "failed_examples"
                }
                print(json.dumps(summary, indent=2))
                document = {"machine": info, **outcome}
                ok = outcome["verdict"]["ok"]
            elif args.command == "floor":
                from .floor import Options as FloorOptions
                from .floor import floor

                outcome = floor(
                    database,
                    FloorOptions(
                        streams=args.streams,
                        processes=args.processes,
                        rounds=args.rounds,
                        variants=args.variants,
                        concurrency=args.concurrency,
                        clients_per_process=args.clients_per_process,
                        settle=args.settle,
                        deliver_timeout=args.deliver_timeout,
                        backlog=args.backlog,
                    ),
                    logs,
                )
                print(json.dumps(outcome["verdict"], indent=2))
                document = {"machine": info, **outcome}
                ok = outcome["verdict"]["ok"]
            elif args.command in ("fanout", "burst", "broadcast"):
                from . import scale

                options = scale.Options(
                    processes=args.processes,
                    users=args.users,
                    concurrency=args.concurrency,
                    clients_per_process=args.clients_per_process,
                    idle=getattr(args, "idle", 0.0),
                    settle=args.settle,
                    deliver_timeout=args.deliver_timeout,
                    backlog=args.backlog,
                    seed=args.seed,
                )
                if database.vendor != "postgresql":
                    raise SystemExit(f"{args.command} runs on PostgreSQL: set DATABASE_URL")
                if args.command == "fanout":
                    outcome = scale.fanout(database, options, args.rows, logs)
                elif args.command == "burst":
                    outcome = scale.burst(
                        database,
                        options,
                        args.burst,
                        args.offline_users,
                        args.before,
                        args.after,
                        logs,
                    )
                else:
                    outcome = scale.broadcast(database, options, args.rounds, logs)
                print(json.dumps(outcome["verdict"], indent=2))
                document = {"machine": info, **outcome}
                ok = outcome["verdict"]["ok"]
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
                        until_p99=args.until_p99,
                        backlog=args.backlog,
                    ),
                    logs,
                )
                print(
                    f"\n{info['database']}, {info['cpu']} ({info['cores']} cores), "
                    f"Python {info['python']}, Django {info['django']}, daphne {info['daphne']}\n"
                )
                print(report.table(results))
                document = {"machine": info, "results": results}
                if args.until_p99 is not None:
                    from .run import ceiling

                    document["ceiling"] = ceiling(results, args.until_p99)
                    print(f"\nceiling: {json.dumps(document['ceiling'])}")
                if args.chart:
                    report.chart(
                        results,
                        args.chart,
                        f"{info['database']} · {info['cpu']} × {info['cores']} cores · "
                        f"{info['date'][:10]} · commit {info['commit']}",
                    )
                ok = True
            document["machine"]["load_average_at_end"] = os.getloadavg()
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
