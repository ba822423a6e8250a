"""The scale runs: many streams on one or several processes, and rows created in bulk.

- `fanout`: every user has a stream on each of --processes processes; rows created by the
  benchmark (another process) must reach every stream of their user. Idle queries/s and CPU
  per process, then latency from a row's `created` to its arrival, and the rows missing.
- `burst`: --streams connected users; --burst rows for users who are not connected, in one
  transaction; the connected users' latency before it and in the --after seconds after it,
  and how many rows each process's poll read (the hub's `rows_read` counter, where the hub
  has one).
- `broadcast`: --users connected users; one INSERT ... SELECT creating a row for each of
  them, --rounds times: from the commit to the first, the median and the last arrival.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tools.daphne_runner import DaphneServer

from . import server as servers
from .client import ClientPool, split
from .database import Database, make_sessions
from .run import log, percentiles

STREAM_PATH = "/notifications/stream/"
# The hub counter of rows the poll read from the database (added with the per-process cursor).
ROWS_READ = "rows_read"


@dataclass
class Options:
    processes: int
    users: int
    concurrency: int
    clients_per_process: int
    idle: float
    settle: float
    deliver_timeout: float
    backlog: int
    seed: int


# (stream id, row id) -> the time the row's latency is counted from.
Expected = dict[tuple[int, int], float]


class Fleet:
    """Servers, client processes and open streams: stream id -> (user id, server index)."""

    def __init__(
        self,
        stack: contextlib.ExitStack,
        database: Database,
        opts: Options,
        name: str,
        logs: Path,
        streams: int,
    ) -> None:
        self.servers: list[DaphneServer] = [
            stack.enter_context(
                servers.serve(
                    database,
                    f"bench-{name}-{i}",
                    logs / f"daphne-{name}-{i}.log",
                    backlog=opts.backlog or None,
                )
            )
            for i in range(opts.processes)
        ]
        self.workers = max(1, math.ceil(streams / opts.clients_per_process))
        self.pool = stack.enter_context(ClientPool(self.workers))
        self.opts = opts
        self.streams: dict[int, tuple[int, int]] = {}
        self.by_user: dict[int, list[int]] = defaultdict(list)
        self.arrivals: dict[tuple[int, int], float] = {}
        self.duplicates = 0
        self.wrong_user = 0

    def open(self, plan: Sequence[tuple[int, str, int, int]]) -> dict[str, Any]:
        """Open streams: (stream id, session key, user id, server index) each."""
        started = time.monotonic()
        refused: Counter[str] = Counter()
        opened = 0
        per_worker = max(1, self.opts.concurrency // self.workers)
        where = {sid: (user_id, server) for sid, _, user_id, server in plan}
        for index, server in enumerate(self.servers):
            mine = [(sid, key) for sid, key, _, s in plan if s == index]
            shares = split(mine, self.workers)
            replies = self.pool.call(
                [("open", server.port, STREAM_PATH, share, per_worker) for share in shares],
                timeout=120 + len(mine) / 20,
            )
            for reply in replies:
                opened += len(reply["opened"])
                refused.update(reply["failed"])
                for sid in reply["opened"]:
                    self.streams[sid] = where[sid]
        for sid, (user_id, _) in self.streams.items():
            self.by_user[user_id].append(sid)
        seconds = round(time.monotonic() - started, 1)
        log(
            f"{len(self.streams)}/{len(plan)} streams open in {seconds} s"
            + (f", refused {dict(refused)}" if refused else "")
        )
        return {"tried": len(plan), "opened": opened, "refused": dict(refused), "seconds": seconds}

    def collect(self, rows: dict[int, int]) -> int:
        """Take what the clients received; return how many events were not of `rows`."""
        other = 0
        for reply in self.pool.broadcast(("collect",), timeout=60):
            for sid, _number, pk, arrived, _chunk in reply["events"]:
                user_id = rows.get(pk)
                if user_id is None:
                    other += 1
                    continue
                if self.streams.get(sid, (None, 0))[0] != user_id:
                    self.wrong_user += 1
                elif (sid, pk) in self.arrivals:
                    self.duplicates += 1
                else:
                    self.arrivals[(sid, pk)] = arrived
        return other

    def alive(self) -> int:
        replies = self.pool.broadcast(("collect",), timeout=60)
        return sum(r["alive"] for r in replies)

    def wait(self, expected: Expected, rows: dict[int, int], deadline: float) -> None:
        """Collect until every expected (stream, row) arrived or the deadline passes."""
        while True:
            self.collect(rows)
            if all(k in self.arrivals for k in expected) or time.monotonic() > deadline:
                return
            time.sleep(0.25)

    def expect(self, rows: dict[int, tuple[int, float]]) -> Expected:
        """Every stream of each row's user should get it: (stream, row) -> `created`."""
        return {
            (sid, pk): created
            for pk, (user_id, created) in rows.items()
            for sid in self.by_user.get(user_id, ())
        }

    def latency(self, expected: Expected, server: int | None = None) -> dict[str, Any]:
        pairs = [k for k in expected if server is None or self.streams[k[0]][1] == server]
        latencies = [self.arrivals[k] - expected[k] for k in pairs if k in self.arrivals]
        return {"expected": len(pairs), "arrived": len(latencies), **percentiles(latencies)}

    def timeline(self, expected: Expected, start: float, window: float) -> list[dict[str, Any]]:
        """Latency by when the row was created: `window` seconds each from `start`."""
        windows: dict[int, list[float]] = defaultdict(list)
        for key, created in expected.items():
            if key in self.arrivals:
                windows[int((created - start) // window)].append(self.arrivals[key] - created)
        return [
            {"from_s": i * window, "deliveries": len(windows[i]), **percentiles(windows[i])}
            for i in sorted(windows)
        ]

    def counters(self) -> list[dict[str, Any]]:
        """Each server's /bench/stats, with its CPU seconds so far and the time."""
        result = []
        for server in self.servers:
            stats = servers.stats(server)
            stats["cpu_seconds"] = servers.cpu_seconds(server.process.pid)
            stats["at"] = time.monotonic()
            result.append(stats)
        return result


def rows_read(hub: dict[str, Any] | None) -> int | None:
    """The hub's count of rows its poll read, or None where the hub does not count them."""
    if not hub or ROWS_READ not in hub:
        return None
    return int(hub[ROWS_READ])


def idle(fleet: Fleet, seconds: float) -> list[dict[str, Any]]:
    """Per server, over an idle window: CPU %, queries/s, rows read by the poll."""
    before = fleet.counters()
    time.sleep(seconds)
    after = fleet.counters()
    result = []
    for b, a in zip(before, after, strict=True):
        window = a["at"] - b["at"]
        read_before, read_after = rows_read(b["hub"]), rows_read(a["hub"])
        result.append(
            {
                "seconds": round(window, 1),
                "cpu_percent": round(100 * (a["cpu_seconds"] - b["cpu_seconds"]) / window, 1),
                "queries_per_s": round(
                    (a["statements"]["queries"] - b["statements"]["queries"]) / window, 2
                ),
                "rows_read": None
                if read_before is None or read_after is None
                else read_after - read_before,
                "statements": {
                    kind: count - b["statements"]["by_kind"].get(kind, 0)
                    for kind, count in a["statements"]["by_kind"].items()
                    if count != b["statements"]["by_kind"].get(kind, 0)
                },
            }
        )
    return result


def send_paced(
    users: Sequence[int], seconds: float | None, count: int | None, rng: random.Random
) -> dict[int, tuple[int, float]]:
    """Create rows one at a time, 20-50 ms apart, for random users; return id -> (user, created).

    For `seconds`, or `count` rows.
    """
    from notifications.models import Notification

    rows: dict[int, tuple[int, float]] = {}
    end = time.monotonic() + (seconds if seconds is not None else math.inf)
    while time.monotonic() < end and (count is None or len(rows) < count):
        user_id = rng.choice(users)
        row = Notification.objects.create(user_id=user_id, text=f"scale #{len(rows)}")
        rows[row.pk] = (user_id, row.created.timestamp())
        time.sleep(rng.uniform(0.02, 0.05))
    return rows


def _deliver(
    fleet: Fleet, rows: dict[int, tuple[int, float]], timeout: float
) -> tuple[Expected, dict[str, Any]]:
    expected = fleet.expect(rows)
    owners = {pk: user_id for pk, (user_id, _) in rows.items()}
    fleet.wait(expected, owners, time.monotonic() + timeout)
    missing = [k for k in expected if k not in fleet.arrivals]
    return expected, {
        **fleet.latency(expected),
        "missing": len(missing),
        "rows_missing_somewhere": len({pk for _, pk in missing}),
    }


def fanout(database: Database, opts: Options, rows: int, logs: Path) -> dict[str, Any]:
    """Every user with a stream on every process: does every stream get every row?"""
    rng = random.Random(opts.seed)
    log(f"fanout: {opts.users} users, a stream on each of {opts.processes} processes")
    sessions = make_sessions(opts.users, prefix="fanout")
    plan = [
        (index * opts.processes + server, key, user_id, server)
        for index, (user_id, key) in enumerate(sessions)
        for server in range(opts.processes)
    ]
    result: dict[str, Any] = {"options": {**opts.__dict__, "rows": rows}}
    with contextlib.ExitStack() as stack:
        fleet = Fleet(stack, database, opts, "fanout", logs, len(plan))
        result["listen_queues"] = [servers.listen_backlog(s.port) for s in fleet.servers]
        result["open"] = fleet.open(plan)
        time.sleep(opts.settle)
        fleet.collect({})
        result["idle"] = idle(fleet, opts.idle)
        log(
            "fanout: idle "
            + "; ".join(
                f"process {i}: {w['cpu_percent']} % CPU, {w['queries_per_s']} queries/s"
                for i, w in enumerate(result["idle"])
            )
        )
        sent = send_paced([user_id for user_id, _ in sessions], None, rows, rng)
        expected, delivery = _deliver(fleet, sent, opts.deliver_timeout)
        delivery["by_process"] = [fleet.latency(expected, i) for i in range(opts.processes)]
        delivery["duplicates"] = fleet.duplicates
        delivery["wrong_user"] = fleet.wrong_user
        result["delivery"] = delivery
        result["alive_at_end"] = fleet.alive()
        result["hubs"] = [c["hub"] for c in fleet.counters()]
    log(
        f"fanout: {delivery['arrived']}/{delivery['expected']} (stream, row) deliveries, "
        f"p50 {delivery['p50_ms']} p99 {delivery['p99_ms']} ms, "
        f"{delivery['missing']} missing"
    )
    result["verdict"] = {
        "ok": delivery["missing"] == 0
        and delivery["duplicates"] == 0
        and delivery["wrong_user"] == 0,
        "every_stream_got_every_row": delivery["missing"] == 0,
        "p99_ms": delivery["p99_ms"],
        "idle_queries_per_s": [w["queries_per_s"] for w in result["idle"]],
        "idle_cpu_percent": [w["cpu_percent"] for w in result["idle"]],
    }
    return result


def burst(
    database: Database,
    opts: Options,
    burst_rows: int,
    offline_users: int,
    before: float,
    after: float,
    logs: Path,
) -> dict[str, Any]:
    """A burst of rows for users who are not connected: what it costs the connected ones."""
    from notifications.models import Notification

    rng = random.Random(opts.seed)
    log(f"burst: {opts.users} connected users, {burst_rows} rows for {offline_users} others")
    sessions = make_sessions(opts.users, prefix="burst")
    offline = [user_id for user_id, _ in make_sessions(offline_users, prefix="offline")]
    plan = [
        (index, key, user_id, index % opts.processes)
        for index, (user_id, key) in enumerate(sessions)
    ]
    connected = [user_id for user_id, _ in sessions]
    result: dict[str, Any] = {
        "options": {
            **opts.__dict__,
            "burst": burst_rows,
            "offline_users": offline_users,
            "before": before,
            "after": after,
        }
    }
    with contextlib.ExitStack() as stack:
        fleet = Fleet(stack, database, opts, "burst", logs, len(plan))
        result["open"] = fleet.open(plan)
        time.sleep(opts.settle)
        fleet.collect({})
        start = fleet.counters()
        sent_before = send_paced(connected, before, None, rng)
        _, result["before"] = _deliver(fleet, sent_before, opts.deliver_timeout)
        log(f"burst: before, p50 {result['before']['p50_ms']} p99 {result['before']['p99_ms']} ms")
        counted = fleet.counters()
        burst_at = time.time()
        started = time.monotonic()
        Notification.objects.bulk_create(
            [
                Notification(user_id=offline[i % len(offline)], text=f"burst #{i}")
                for i in range(burst_rows)
            ],
            batch_size=10_000,
        )
        result["insert_seconds"] = round(time.monotonic() - started, 2)
        log(f"burst: {burst_rows} rows inserted in {result['insert_seconds']} s")
        sent_after = send_paced(connected, after, None, rng)
        expected_after, result["after"] = _deliver(fleet, sent_after, opts.deliver_timeout)
        # From the start of the burst's INSERT.
        result["after_over_time"] = fleet.timeline(expected_after, burst_at, 5.0)
        end = fleet.counters()
        log(f"burst: after, p50 {result['after']['p50_ms']} p99 {result['after']['p99_ms']} ms")
        result["duplicates"] = fleet.duplicates
        result["wrong_user"] = fleet.wrong_user
        result["hubs"] = [c["hub"] for c in end]
    reads = []
    for s, c, e in zip(start, counted, end, strict=True):
        first, middle, last = rows_read(s["hub"]), rows_read(c["hub"]), rows_read(e["hub"])
        reads.append(
            {
                "rows_read_before": None if first is None or middle is None else middle - first,
                "rows_read_burst_and_after": None
                if middle is None or last is None
                else last - middle,
                "queries_before": c["statements"]["queries"] - s["statements"]["queries"],
                "queries_burst_and_after": e["statements"]["queries"] - c["statements"]["queries"],
            }
        )
    result["by_process"] = reads
    p99_before, p99_after = result["before"]["p99_ms"], result["after"]["p99_ms"]
    ratio = round(p99_after / p99_before, 2) if p99_before and p99_after else None
    result["verdict"] = {
        "p99_before_ms": p99_before,
        "p99_after_ms": p99_after,
        "ratio": ratio,
        "within_1_2": ratio is not None and ratio <= 1.2,
        "rows_read_burst_and_after": [
            "n/a" if r["rows_read_burst_and_after"] is None else r["rows_read_burst_and_after"]
            for r in reads
        ],
        "missing": result["before"]["missing"] + result["after"]["missing"],
        "ok": result["before"]["missing"] + result["after"]["missing"] == 0
        and result["duplicates"] == 0
        and result["wrong_user"] == 0,
    }
    return result


def _insert_for_all(user_ids: Sequence[int], text: str) -> tuple[dict[int, int], float, float]:
    """One INSERT ... SELECT: a row for each user; return id -> user, and the commit's times.

    The times are time.time() just before COMMIT was sent and once it returned.
    """
    from django.contrib.auth import get_user_model
    from django.db import connection, transaction

    from notifications.models import Notification

    table = connection.ops.quote_name(Notification._meta.db_table)
    users = connection.ops.quote_name(get_user_model()._meta.db_table)
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {table} (user_id, text, dispatched, created) "  # noqa: S608
                f"SELECT id, %s, false, now() FROM {users} WHERE id = ANY(%s) "
                "RETURNING id, user_id",
                [text, list(user_ids)],
            )
            created = {int(pk): int(user_id) for pk, user_id in cursor.fetchall()}
        committing = time.time()
    committed = time.time()
    return created, committing, committed


def broadcast(database: Database, opts: Options, rounds: int, logs: Path) -> dict[str, Any]:
    """One INSERT for every connected user: how long until the last stream has its row?"""
    log(f"broadcast: {opts.users} connected users on {opts.processes} process(es)")
    sessions = make_sessions(opts.users, prefix="broadcast")
    plan = [
        (index, key, user_id, index % opts.processes)
        for index, (user_id, key) in enumerate(sessions)
    ]
    result: dict[str, Any] = {"options": {**opts.__dict__, "rounds": rounds}, "rounds": []}
    with contextlib.ExitStack() as stack:
        fleet = Fleet(stack, database, opts, "broadcast", logs, len(plan))
        result["open"] = fleet.open(plan)
        time.sleep(opts.settle)
        fleet.collect({})
        users = sorted(fleet.by_user)
        cpu = servers.RoundCpu(fleet.servers, fleet.pool)
        for number in range(rounds):
            cpu.start()
            created, committing, committed = _insert_for_all(users, f"broadcast {number}")
            rows = {pk: (user_id, committed) for pk, user_id in created.items()}
            expected = fleet.expect(rows)
            fleet.wait(expected, created, time.monotonic() + opts.deliver_timeout)
            spent = cpu.spent()
            after_commit = sorted(
                fleet.arrivals[k] - committed for k in expected if k in fleet.arrivals
            )
            one: dict[str, Any] = {
                "rows": len(created),
                "expected": len(expected),
                "arrived": len(after_commit),
                "commit_ms": round((committed - committing) * 1000, 1),
                "first_ms": round(after_commit[0] * 1000, 1) if after_commit else None,
                **percentiles(after_commit),
            }
            one["last_ms"] = one.pop("max_ms")
            # From before the INSERT until every row was collected (the last collection up
            # to 0.25 s after the last arrival): each server's CPU seconds, and the clients'.
            one.update(spent)
            result["rounds"].append(one)
            log(
                f"broadcast {number + 1}/{rounds}: {one['arrived']}/{one['expected']} arrived; "
                f"after the commit: first {one['first_ms']}, p50 {one['p50_ms']}, "
                f"last {one['last_ms']} ms; CPU s: servers {one['server_cpu_s']}, "
                f"clients {one['client_cpu_s']}"
            )
            time.sleep(opts.settle)
        result["duplicates"] = fleet.duplicates
        result["wrong_user"] = fleet.wrong_user
        result["hubs"] = [c["hub"] for c in fleet.counters()]
    lasts = [r["last_ms"] for r in result["rounds"] if r["last_ms"] is not None]
    p50s = [r["p50_ms"] for r in result["rounds"] if r["p50_ms"] is not None]
    missing = sum(r["expected"] - r["arrived"] for r in result["rounds"])
    result["verdict"] = {
        "last_ms_median": sorted(lasts)[len(lasts) // 2] if lasts else None,
        "p50_ms_median": sorted(p50s)[len(p50s) // 2] if p50s else None,
        "missing": missing,
        "ok": missing == 0
        and result["duplicates"] == 0
        and result["wrong_user"] == 0
        and result["open"]["opened"] == len(plan),
    }
    return result
