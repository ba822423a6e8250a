"""The measurement run: for each design and N, open N streams and measure the server."""

from __future__ import annotations

import math
import random
import re
import sys
import time
import traceback
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import server as servers
from .client import ClientPool, split
from .database import Database

STREAM_PATHS = {"ours": "/notifications/stream/", "naive": "/bench/naive/stream/"}


@dataclass
class Options:
    streams: list[int]
    designs: list[str]
    naive_max: int
    idle: float
    settle: float
    other: int
    admin: int
    clients_per_process: int
    concurrency: int
    deliver_timeout: float
    flood: int
    slow_mb: int
    seed: int
    verbose: bool
    # Stop stepping up once `ours` misses this p99 (ms, rows from another process) or refuses
    # streams; None: run every N.
    until_p99: float | None = None
    # The server's listen queue; 0: daphne's own (Twisted's 50).
    backlog: int = 4096


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    """p50/p95/p99/max in milliseconds (nearest rank), None without values."""
    ordered = sorted(values)

    def rank(p: float) -> float | None:
        if not ordered:
            return None
        return round(ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] * 1000, 1)

    return {"p50_ms": rank(50), "p95_ms": rank(95), "p99_ms": rank(99), "max_ms": rank(100)}


class Collector:
    """Gathers what the client processes received, and matches it with the rows sent."""

    def __init__(self, pool: ClientPool, users: dict[int, int]) -> None:
        self.pool = pool
        # Stream id -> its user's id.
        self.users = users
        self.arrivals: dict[int, float] = {}
        self.duplicates = 0
        self.wrong_user = 0
        self.unexpected = 0
        self.expected: dict[int, tuple[float, int]] = {}

    def collect(self, expected: dict[int, tuple[float, int]]) -> None:
        # Rows of an earlier phase may still arrive: they are late, not unexpected.
        self.expected.update(expected)
        expected = self.expected
        for reply in self.pool.broadcast(("collect",), timeout=30):
            for sid, _number, event_id, arrived, _chunk in reply["events"]:
                row = expected.get(event_id)
                if row is None:
                    self.unexpected += 1
                    continue
                if row[1] != self.users.get(sid):
                    self.wrong_user += 1
                if event_id in self.arrivals:
                    self.duplicates += 1
                else:
                    self.arrivals[event_id] = arrived

    def streams(self) -> tuple[int, int]:
        replies = self.pool.broadcast(("collect",), timeout=30)
        # Events that came meanwhile are unexpected here: nothing was being sent.
        self.unexpected += sum(len(r["events"]) for r in replies)
        return sum(r["alive"] for r in replies), sum(r["ended"] for r in replies)

    def wait(self, expected: dict[int, tuple[float, int]], deadline: float) -> None:
        while True:
            self.collect(expected)
            if all(pk in self.arrivals for pk in expected) or time.monotonic() > deadline:
                return
            time.sleep(0.25)


def summarize(
    expected: dict[int, tuple[float, int]], collector: Collector, sent: int
) -> dict[str, Any]:
    latencies = [
        collector.arrivals[pk] - created
        for pk, (created, _) in expected.items()
        if pk in collector.arrivals
    ]
    return {"sent": sent, "arrived": len(latencies), **percentiles(latencies)}


def send_from_process(
    count: int,
    opts: Options,
    rng: random.Random,
    users: Sequence[int],
    opened: Sequence[int],
    collector: Collector,
) -> dict[str, Any]:
    """Create rows from this process (another process than the server), spread over time."""
    from notifications.models import Notification

    expected: dict[int, tuple[float, int]] = {}
    started = time.monotonic()
    for i in range(count):
        user_id = users[rng.choice(opened)]
        row = Notification.objects.create(user_id=user_id, text=f"bench: from another process #{i}")
        expected[row.pk] = (row.created.timestamp(), user_id)
        time.sleep(rng.uniform(0.02, 0.05))
    sent = time.monotonic()
    collector.wait(expected, sent + opts.deliver_timeout)
    return {
        **summarize(expected, collector, count),
        "send_seconds": round(sent - started, 1),
        "wait_seconds": round(time.monotonic() - sent, 1),
    }


_CSRF = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


def send_from_admin(
    opts: Options,
    rng: random.Random,
    base_url: str,
    staff_key: str,
    users: Sequence[int],
    opened: Sequence[int],
    collector: Collector,
) -> dict[str, Any]:
    """Post rows through the admin's add form, then read their `created` from the database."""
    import httpx

    from notifications.models import Notification

    add = "/admin/notifications/notification/add/"
    texts = {}
    failed: Counter[str] = Counter()
    started = time.monotonic()
    with httpx.Client(base_url=base_url, cookies={"sessionid": staff_key}, timeout=30) as http:
        form = http.get(add)
        match = _CSRF.search(form.text)
        if form.status_code != 200 or not match:
            return {"sent": opts.admin, "arrived": 0, "error": f"add form: {form.status_code}"}
        token = match.group(1)
        for i in range(opts.admin):
            user_id = users[rng.choice(opened)]
            text = f"bench: through the admin form #{i} {rng.random():.9f}"
            response = http.post(
                add,
                data={
                    "csrfmiddlewaretoken": token,
                    "user": str(user_id),
                    "text": text,
                    "_save": "Save",
                },
            )
            if response.status_code == 302:
                texts[text] = user_id
            else:
                failed[str(response.status_code)] += 1
            time.sleep(rng.uniform(0.05, 0.1))
    expected = {
        pk: (created.timestamp(), user_id)
        for pk, created, user_id in Notification.objects.filter(text__in=list(texts)).values_list(
            "pk", "created", "user_id"
        )
    }
    sent = time.monotonic()
    collector.wait(expected, sent + opts.deliver_timeout)
    result = {
        **summarize(expected, collector, opts.admin),
        "send_seconds": round(sent - started, 1),
        "wait_seconds": round(time.monotonic() - sent, 1),
    }
    if failed:
        result["post_failed"] = dict(failed)
    return result


# Stream ids of the flooding account's streams and of the slow client, apart from the others.
FLOOD_SID = 10_000_000
SLOW_SID = 20_000_000


def one_account_floods(
    opts: Options,
    rng: random.Random,
    server: Any,
    path: str,
    sessions: Sequence[tuple[int, str]],
    users: Sequence[int],
    opened: Sequence[int],
    collector: Collector,
    pool: ClientPool,
) -> dict[str, Any]:
    """One account opens --flood streams; how many get in, and do the others still get theirs?"""
    user_id, key = sessions[-2]
    sids = [FLOOD_SID + i for i in range(opts.flood)]
    collector.users.update(dict.fromkeys(sids, user_id))
    reply = pool.call_one(0, ("open", server.port, path, [(sid, key) for sid in sids], 50), 120)
    result = {
        "tried": opts.flood,
        "accepted": len(reply["opened"]),
        "refused": reply["failed"],
        "others": send_from_process(20, opts, rng, users, opened, collector),
    }
    pool.call_one(0, ("close", sids), 60)
    log(
        f"flood: {result['accepted']}/{opts.flood} streams of one account accepted, "
        f"refused {result['refused']}; others' p99 {result['others']['p99_ms']} ms"
    )
    return result


def slow_client(
    opts: Options,
    rng: random.Random,
    server: Any,
    path: str,
    sessions: Sequence[tuple[int, str]],
    users: Sequence[int],
    opened: Sequence[int],
    collector: Collector,
    pool: ClientPool,
) -> dict[str, Any]:
    """A stream that never reads while --slow-mb of notifications are sent to its user."""
    from notifications import hub
    from notifications.models import Notification

    user_id, key = sessions[-1]
    rss_before = server.status()["VmRSS"]
    reply = pool.call_one(0, ("stall", server.port, path, SLOW_SID, key), 60)
    if not reply.get("opened"):
        return {"error": f"the slow client's stream did not open: {reply.get('reason')}"}
    text = "x" * 10_000
    rows = opts.slow_mb * 100
    started = time.monotonic()
    for _ in range(0, rows, 100):
        Notification.objects.bulk_create(
            [Notification(user_id=user_id, text=text) for _ in range(100)]
        )
        created = getattr(hub, "notifications_created", None)
        if created is not None:
            created()
        time.sleep(0.1)
    others = send_from_process(20, opts, rng, users, opened, collector)
    time.sleep(2)
    rss_after = server.status()["VmRSS"]
    result = {
        "sent_mb": round(rows * len(text) / 1e6, 1),
        "send_seconds": round(time.monotonic() - started, 1),
        "rss_growth_mb": round((rss_after - rss_before) / 1024, 1),
        "others": others,
    }
    log(
        f"slow client: {result['sent_mb']} MB sent to a stream that does not read; server RSS "
        f"+{result['rss_growth_mb']} MB; others' p99 {others['p99_ms']} ms"
    )
    return result


def measure(
    design: str,
    n: int,
    database: Database,
    sessions: Sequence[tuple[int, str]],
    staff_key: str,
    opts: Options,
    tmp: Path,
) -> dict[str, Any]:
    """Measure one design with `n` streams on a fresh server."""
    from django.db import connection

    from notifications.models import Notification

    path = STREAM_PATHS[design]
    app_name = f"bench-{design}-{n}"
    users = [user_id for user_id, _ in sessions]
    rng = random.Random(opts.seed + n)
    result: dict[str, Any] = {"design": design, "streams": n}
    workers = max(1, math.ceil(n / opts.clients_per_process))
    log(f"{design}, {n} streams: starting the server and {workers} client process(es)")
    try:
        with (
            servers.serve(
                database,
                app_name,
                tmp / f"daphne-{design}-{n}.log",
                backlog=opts.backlog or None,
            ) as server,
            ClientPool(workers) as pool,
        ):
            pid = server.process.pid
            # Warm up: one stream opened and closed, so that the baseline has the code loaded.
            pool.call_one(0, ("open", server.port, path, [(0, sessions[0][1])], 1), 60)
            pool.call_one(0, ("close",), 30)
            servers.stats(server)
            time.sleep(2)
            base = server.status()
            result["rss_kib_base"] = base["VmRSS"]
            result["threads_base"] = base["Threads"]

            started = time.monotonic()
            shares = split(list(enumerate(key for _, key in sessions[:n])), workers)
            per_worker = max(1, opts.concurrency // workers)
            replies = pool.call(
                [("open", server.port, path, share, per_worker) for share in shares],
                timeout=120 + n / 20,
            )
            opened = sorted(sid for r in replies for sid in r["opened"])
            refused: Counter[str] = Counter()
            for r in replies:
                refused.update(r["failed"])
            result["opened"] = len(opened)
            result["refused"] = dict(refused)
            result["open_seconds"] = round(time.monotonic() - started, 1)
            log(
                f"{design}, {n} streams: {len(opened)} open in {result['open_seconds']} s"
                + (f", refused {dict(refused)}" if refused else "")
            )

            time.sleep(opts.settle)
            collector = Collector(pool, dict(enumerate(users)))
            collector.streams()
            before, cpu_before, t_before = (
                servers.stats(server),
                servers.cpu_seconds(pid),
                time.monotonic(),
            )
            time.sleep(opts.idle)
            after, cpu_after, t_after = (
                servers.stats(server),
                servers.cpu_seconds(pid),
                time.monotonic(),
            )
            window = t_after - t_before
            status = server.status()
            result["idle_seconds"] = round(window, 1)
            result["cpu_percent"] = round(100 * (cpu_after - cpu_before) / window, 1)
            result["rss_kib"] = status["VmRSS"]
            result["rss_per_stream_kib"] = (
                round((status["VmRSS"] - base["VmRSS"]) / len(opened), 1) if opened else None
            )
            result["threads"] = status["Threads"]
            result["db_connections"], result["db_connections_all"] = servers.database_connections(
                server, database, app_name
            )
            b, a = before["statements"], after["statements"]
            result["queries_per_s"] = round((a["queries"] - b["queries"]) / window, 2)
            result["change_checks_per_s"] = round(
                (a["change_checks"] - b["change_checks"]) / window, 2
            )
            result["idle_statements"] = {
                k: v - b["by_kind"].get(k, 0)
                for k, v in a["by_kind"].items()
                if v != b["by_kind"].get(k, 0)
            }
            alive, _ = collector.streams()
            result["alive_after_idle"] = alive
            log(
                f"{design}, {n} streams: idle CPU {result['cpu_percent']} %, "
                f"{result['queries_per_s']} queries/s, {alive} streams alive"
            )

            if opened:
                result["other_process"] = send_from_process(
                    opts.other, opts, rng, users, opened, collector
                )
                result["admin_form"] = send_from_admin(
                    opts, rng, server.url, staff_key, users, opened, collector
                )
                other, admin = result["other_process"], result["admin_form"]
                log(
                    f"{design}, {n} streams: another process {other['arrived']}/{other['sent']} "
                    f"p50 {other['p50_ms']} p99 {other['p99_ms']} ms; admin form "
                    f"{admin['arrived']}/{admin['sent']} p50 {admin.get('p50_ms')} "
                    f"p99 {admin.get('p99_ms')} ms"
                )
            extras = {
                "flood": (one_account_floods, opts.flood),
                "slow_client": (slow_client, opts.slow_mb),
            }
            for name, (phase, wanted) in extras.items():
                if not (opened and wanted and n == opts.streams[0]):
                    continue
                try:
                    result[name] = phase(
                        opts, rng, server, path, sessions, users, opened, collector, pool
                    )
                except (RuntimeError, TimeoutError, OSError) as exc:
                    result[name] = {"error": f"{type(exc).__name__}: {exc}"}
                    log(f"{design}, {n} streams: {name} FAILED: {result[name]['error']}")
            alive, _ = collector.streams()
            result["alive_at_end"] = alive
            result["duplicates"] = collector.duplicates
            result["wrong_user"] = collector.wrong_user
            result["unexpected_events"] = collector.unexpected
            result["hub"] = servers.stats(server).get("hub")
            pool.broadcast(("close",), timeout=60)
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
        log(f"{design}, {n} streams FAILED: {result['error']}")
        if opts.verbose:
            traceback.print_exc()
    finally:
        # Nothing left for the next server to deliver.
        Notification.objects.filter(dispatched=False).update(dispatched=True)
        connection.close()
    return result


def run(
    database: Database,
    opts: Options,
    tmp: Path,
) -> list[dict[str, Any]]:
    from .database import make_sessions, make_staff_session

    log(f"creating {max(opts.streams)} users and sessions")
    # The last two: an account that floods the server with streams, and a slow client.
    sessions = make_sessions(max(opts.streams) + 2)
    staff_key = make_staff_session()
    results = []
    for n in opts.streams:
        for design in opts.designs:
            if design == "naive" and n > opts.naive_max:
                results.append(
                    {
                        "design": design,
                        "streams": n,
                        "skipped": f"above --naive-max ({opts.naive_max})",
                    }
                )
                continue
            results.append(measure(design, n, database, sessions, staff_key, opts, tmp))
        if opts.until_p99 is not None and not holds(results[-len(opts.designs) :], opts.until_p99):
            log(f"{n} streams miss p99 <= {opts.until_p99:g} ms or refuse streams: stopping here")
            break
    return results


def holds(results: list[dict[str, Any]], p99_ms: float) -> bool:
    """Whether `ours` opened every stream and kept the p99 from another process within p99_ms."""
    for row in results:
        if row.get("design") != "ours" or "skipped" in row:
            continue
        p99 = (row.get("other_process") or {}).get("p99_ms")
        other = row.get("other_process") or {}
        if (
            row.get("error")
            or row.get("opened") != row["streams"]
            or p99 is None
            or p99 > p99_ms
            or other.get("arrived") != other.get("sent")
        ):
            return False
    return True


def ceiling(results: list[dict[str, Any]], p99_ms: float) -> dict[str, Any]:
    """The most streams `ours` held with every stream open and p99 within p99_ms, and the
    first N that missed."""
    held = [r["streams"] for r in results if r.get("design") == "ours" and holds([r], p99_ms)]
    missed = [
        r["streams"]
        for r in results
        if r.get("design") == "ours" and "skipped" not in r and not holds([r], p99_ms)
    ]
    return {
        "p99_ms": p99_ms,
        "most_streams_held": max(held, default=None),
        "first_missed": min(missed, default=None),
    }
