"""The several-process run: clients come and go across daphne processes while rows pour in.

Its verdict answers: was any row claimed twice, was any row lost?
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import server as servers
from .client import ClientPool, split
from .database import Database, make_sessions
from .run import log, percentiles

SETTLE_LIMIT = 90.0


@dataclass
class Options:
    processes: int
    users: int
    clients_per_user: int
    notifications: int
    duration: float
    stay: tuple[float, float]
    pause: float
    quiet: float
    seed: int


def _create_rows(opts: Options, users: list[int], rng: random.Random) -> list[int]:
    """Create the rows over 90 % of the duration, in small batches; return their ids."""
    from notifications import hub
    from notifications.models import Notification

    ids: list[int] = []
    spread = opts.duration * 0.9
    started = time.monotonic()
    while len(ids) < opts.notifications:
        elapsed = time.monotonic() - started
        due = min(opts.notifications, math.ceil(opts.notifications * min(1.0, elapsed / spread)))
        if due > len(ids):
            rows = Notification.objects.bulk_create(
                [
                    Notification(user_id=rng.choice(users), text=f"churn #{len(ids) + i}")
                    for i in range(due - len(ids))
                ]
            )
            ids.extend(r.pk for r in rows)
            # No save(), no post_save: say so (a no-op here, where no hub runs).
            created = getattr(hub, "notifications_created", None)
            if created is not None:
                created()
        time.sleep(0.05)
    return ids


def _claim_log(paths: list[Path]) -> dict[str, Any]:
    """Replay the servers' claim logs in time order; count claims of rows already claimed."""
    entries: list[tuple[float, str, int, list[int]]] = []
    for path in paths:
        if not path.exists():
            return {"available": False}
        for line in path.read_text().splitlines():
            tag, stamp, pid, *pks = line.split()
            entries.append((float(stamp), tag, int(pid), [int(i) for i in pks]))
    entries.sort()
    holders: dict[int, list[int]] = defaultdict(list)
    released: set[int] = set()
    twice: set[int] = set()
    claims = releases = 0
    for _stamp, tag, claimer, ids in entries:
        for pk in ids:
            if tag == "C":
                claims += 1
                if holders[pk]:
                    twice.add(pk)
                holders[pk].append(claimer)
            else:
                releases += 1
                released.add(pk)
                if holders[pk]:
                    holders[pk].pop()
    return {
        "available": True,
        "claims": claims,
        "releases": releases,
        "claimed_twice": len(twice),
        "claimed_twice_ids": sorted(twice)[:20],
        "released_ids": released,
    }


def churn(database: Database, opts: Options, logs: Path) -> dict[str, Any]:
    from notifications.models import Notification

    if database.vendor != "postgresql":
        log("churn on SQLite: several processes share one file; PostgreSQL is what it is for")
    rng = random.Random(opts.seed)
    sessions = make_sessions(opts.users, prefix="churn")
    users = [user_id for user_id, _ in sessions]
    clients = [
        (index * opts.clients_per_user + copy, key, 0)
        for index, (_, key) in enumerate(sessions)
        for copy in range(opts.clients_per_user)
    ]
    client_user = {
        index * opts.clients_per_user + copy: user_id
        for index, (user_id, _) in enumerate(sessions)
        for copy in range(opts.clients_per_user)
    }
    claim_logs = [logs / f"claims-{i}.log" for i in range(opts.processes)]
    for path in claim_logs:
        path.unlink(missing_ok=True)
    workers = max(1, math.ceil(len(clients) / 1000))
    hubs = []
    with contextlib.ExitStack() as stack:
        started = [
            stack.enter_context(
                servers.serve(
                    database,
                    f"bench-churn-{i}",
                    logs / f"daphne-churn-{i}.log",
                    BENCH_CLAIM_LOG=str(claim_logs[i]),
                )
            )
            for i in range(opts.processes)
        ]
        ports = [s.port for s in started]
        pool = stack.enter_context(ClientPool(workers))
        shares = split(clients, workers)
        log(
            f"churn: {opts.processes} servers, {len(clients)} clients of {opts.users} users, "
            f"{opts.notifications} rows over {opts.duration:.0f} s"
        )
        pool.send_all(
            [
                ("churn", ports, share, opts.duration, opts.stay, opts.pause, opts.seed + i)
                for i, share in enumerate(shares)
            ]
        )
        ids = _create_rows(opts, users, rng)
        log(f"churn: {len(ids)} rows created; waiting for the clients")
        pool.receive_all(timeout=opts.duration + 120)
        log("churn: settling (every client reconnects once, until quiet)")
        pool.call(
            [
                ("settle", ports, share, opts.quiet, SETTLE_LIMIT, opts.seed + 100 + i)
                for i, share in enumerate(shares)
            ],
            timeout=SETTLE_LIMIT + 60,
        )
        replies = pool.broadcast(("churn_results",), timeout=120)
        for server in started:
            with contextlib.suppress(OSError):
                hubs.append(servers.stats(server).get("hub"))

    events = [e for r in replies for e in r["events"]]
    connections = {(c["client"], c["number"]): c for r in replies for c in r["connections"]}
    rows = {
        pk: (user_id, dispatched, created.timestamp())
        for pk, user_id, dispatched, created in Notification.objects.filter(pk__in=ids).values_list(
            "pk", "user_id", "dispatched", "created"
        )
    }
    received_by_user: set[int] = set()
    live_servers: dict[int, set[int]] = defaultdict(set)
    seen_on_connection: Counter[tuple[int, int, int]] = Counter()
    wrong_user = replays = live = 0
    latencies = []
    for client, number, pk, arrived, chunk in events:
        row = rows.get(pk)
        if row is None:
            continue
        user_id, _dispatched, created = row
        if user_id != client_user[client]:
            wrong_user += 1
            continue
        seen_on_connection[(client, number, pk)] += 1
        received_by_user.add(pk)
        conn = connections[(client, number)]
        # A replay is the first chunk after the opening one, and only rows after the cursor.
        if chunk == 1 and (conn["cursor"] is None or pk > conn["cursor"]):
            replays += 1
        else:
            live += 1
            live_servers[pk].add(conn["server"])
            latencies.append(arrived - created)
    statuses = Counter(str(c["status"]) for c in connections.values())
    dispatched = {pk for pk, (_, d, _) in rows.items() if d}
    lost = sorted(dispatched - received_by_user)
    undispatched = sorted(set(rows) - dispatched)
    server_log = _claim_log(claim_logs)
    released = server_log.pop("released_ids", set())
    from_two = {pk for pk, s in live_servers.items() if len(s) > 1}
    verdict = {
        "rows": len(rows),
        # From the servers' claim logs; None when they could not be written (see counters.py).
        "claimed_twice": server_log.get("claimed_twice"),
        # Sent live by two processes: a double claim, unless the first process released the row
        # (a stream of the user closed with it unsent) and the second claimed it again.
        "received_live_from_two_processes": len(from_two),
        "of_which_after_a_release": len(from_two & released),
        "lost": len(lost),
        "lost_ids": lost[:20],
        "undispatched_left": len(undispatched),
        "received": len(received_by_user),
        "duplicates_on_a_stream": sum(1 for c in seen_on_connection.values() if c > 1),
        "wrong_user": wrong_user,
        "deliveries_live": live,
        "deliveries_replayed": replays,
        "connections": sum(statuses.values()),
        "connection_statuses": dict(statuses),
        "live_latency": percentiles(latencies),
    }
    verdict["ok"] = (
        verdict["lost"] == 0
        and verdict["received_live_from_two_processes"] == verdict["of_which_after_a_release"]
        and verdict["claimed_twice"] == 0
        and verdict["duplicates_on_a_stream"] == 0
        and wrong_user == 0
    )
    return {
        "options": opts.__dict__,
        "verdict": verdict,
        "claim_log": server_log,
        "hubs": hubs,
    }
