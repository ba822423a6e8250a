"""The fault run: devices on several processes while a process is killed and the database cut.

Its verdict is per stream (one connection of one client): every row of its user created while
it was open, or after the cursor it came with, received exactly once; nothing of another
user; nothing at or below its cursor. And per client, over all its connections: every row of
its user received, and none twice. It also counts what the reconnect storm met when the
killed process came back on its port: refused, reset or unanswered connections.
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

from tools.daphne_runner import DaphneServer

from . import server as servers
from .client import ClientPool, split
from .database import Database, make_sessions
from .fault_clients import fault_worker_main
from .run import log, percentiles

# Seconds the settle phase may last at most.
SETTLE_LIMIT = 120.0
# Failures of connections to the killed process this soon after the kill are the kill's own
# (a connection being opened when the process died).
KILL_MARGIN = 0.5
# Seconds of each window of the live latency's timeline.
LATENCY_WINDOW = 5
# Seconds after the restart counted as the reconnect storm.
STORM_WINDOW = 10.0


@dataclass
class Options:
    processes: int
    users: int
    clients_per_user: tuple[int, int]
    notifications: int
    duration: float
    stay: tuple[float, float]
    pause: float
    retry: tuple[float, float]
    quiet: float
    grace: float
    kill: bool
    kill_at: float
    down: float
    cut: bool
    cut_at: float
    backlog: int
    seed: int


@dataclass
class Fault:
    """What the run did to the servers, and when (time.time())."""

    kind: str
    at: float
    server: int | None = None
    listening: float | None = None
    detail: int | None = None


def _create_rows(opts: Options, users: list[int], rng: random.Random, due_faults: Any) -> list[int]:
    """Create the rows over 90 % of the duration, in small batches; run faults when due."""
    from notifications.models import Notification

    ids: list[int] = []
    spread = opts.duration * 0.9
    started = time.monotonic()
    while time.monotonic() - started < opts.duration:
        elapsed = time.monotonic() - started
        due_faults(elapsed)
        due = min(opts.notifications, math.ceil(opts.notifications * min(1.0, elapsed / spread)))
        if due > len(ids):
            rows = Notification.objects.bulk_create(
                [
                    Notification(user_id=rng.choice(users), text=f"faults #{len(ids) + i}")
                    for i in range(due - len(ids))
                ]
            )
            ids.extend(r.pk for r in rows)
        time.sleep(0.05)
    return ids


def terminate_backends(database: Database, prefix: str) -> int:
    """Cut every PostgreSQL connection whose application_name starts with `prefix`."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = %s AND application_name LIKE %s",
            [database.name, prefix.replace("%", r"\%") + "%"],
        )
        row = cursor.fetchone()
    return int(row[0]) if row else 0


def faults(database: Database, opts: Options, logs: Path) -> dict[str, Any]:
    from notifications import conf
    from notifications.models import Notification

    if database.vendor != "postgresql":
        raise SystemExit(
            "the fault run cuts PostgreSQL connections: set a postgres:// DATABASE_URL"
        )
    rng = random.Random(opts.seed)
    sessions = make_sessions(opts.users, prefix="faults")
    first_cursor = Notification.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    clients: list[tuple[int, str, int, int]] = []
    client_user: dict[int, int] = {}
    low, high = opts.clients_per_user
    for index, (user_id, key) in enumerate(sessions):
        for copy in range(rng.randint(low, high)):
            # Copies of a user on different processes (as long as there are enough).
            server = (index + copy) % opts.processes
            client_user[len(clients)] = user_id
            clients.append((len(clients), key, server, first_cursor))
    users = [user_id for user_id, _ in sessions]
    workers = max(1, math.ceil(len(clients) / 1000))
    backlog = opts.backlog or None
    prefix = "bench-faults-"
    names = [f"{prefix}{i}" for i in range(opts.processes)]
    done_faults: list[Fault] = []
    hubs: list[Any] = []
    with contextlib.ExitStack() as stack:
        running: list[DaphneServer] = [
            stack.enter_context(
                servers.serve(database, names[i], logs / f"daphne-faults-{i}.log", backlog=backlog)
            )
            for i in range(opts.processes)
        ]
        ports = [s.port for s in running]
        listen_queues = [servers.listen_backlog(port) for port in ports]
        pool = stack.enter_context(ClientPool(workers, fault_worker_main))
        shares = split(clients, workers)
        log(
            f"faults: {opts.processes} servers (listen queues {listen_queues}), "
            f"{len(clients)} clients of {opts.users} users, {opts.notifications} rows over "
            f"{opts.duration:.0f} s"
        )
        plan = []
        if opts.kill:
            plan.append((opts.kill_at * opts.duration, "kill"))
        if opts.cut:
            plan.append((opts.cut_at * opts.duration, "cut"))
        plan.sort()
        killed: dict[str, Any] = {}

        def due_faults(elapsed: float) -> None:
            while plan and plan[0][0] <= elapsed:
                _, kind = plan.pop(0)
                if kind == "kill":
                    fault = Fault("kill", time.time(), server=0)
                    running[0].process.kill()
                    running[0].process.wait(timeout=10)
                    log(f"faults: server 0 (port {ports[0]}) killed with SIGKILL")
                    killed["fault"] = fault
                    plan.append((elapsed + opts.down, "restart"))
                    plan.sort()
                elif kind == "restart":
                    fault = killed["fault"]
                    running[0] = stack.enter_context(
                        servers.serve(
                            database,
                            names[0],
                            logs / "daphne-faults-0.log",
                            port=ports[0],
                            backlog=backlog,
                        )
                    )
                    fault.listening = time.time()
                    listen_queues.append(servers.listen_backlog(ports[0]))
                    done_faults.append(fault)
                    log(
                        f"faults: server 0 listens again on port {ports[0]}, "
                        f"{fault.listening - fault.at:.1f} s after the kill"
                    )
                else:
                    fault = Fault("cut", time.time())
                    fault.detail = terminate_backends(database, prefix)
                    done_faults.append(fault)
                    log(f"faults: {fault.detail} server connections cut (pg_terminate_backend)")

        pool.send_all(
            [
                (
                    "faults",
                    ports,
                    share,
                    opts.duration,
                    opts.stay,
                    opts.pause,
                    opts.retry,
                    opts.seed + i,
                )
                for i, share in enumerate(shares)
            ]
        )
        ids = _create_rows(opts, users, rng, due_faults)
        # A restart planned after the end still happens, so that every client can come back.
        due_faults(math.inf)
        log(f"faults: {len(ids)} rows created; waiting for the clients")
        pool.receive_all(timeout=120)
        log("faults: settling (every client comes back until it has its user's newest row)")
        # Each client comes back until it has its user's newest row.
        newest: dict[int, int] = {}
        for pk, user_id in Notification.objects.filter(pk__in=ids).values_list("pk", "user_id"):
            newest[user_id] = max(newest.get(user_id, 0), pk)
        targets = {client: newest.get(user_id, 0) for client, user_id in client_user.items()}
        settled = pool.call(
            [
                (
                    "come_back",
                    ports,
                    targets,
                    opts.quiet,
                    SETTLE_LIMIT,
                    opts.retry,
                    opts.seed + 100 + i,
                )
                for i in range(workers)
            ],
            timeout=SETTLE_LIMIT + 60,
        )
        replies = pool.broadcast(("fault_results",), timeout=120)
        for process in running:
            try:
                hubs.append(servers.stats(process).get("hub"))
            except OSError as exc:
                hubs.append({"error": str(exc)})

    rows = {
        pk: (user_id, created.timestamp())
        for pk, user_id, created in Notification.objects.filter(pk__in=ids).values_list(
            "pk", "user_id", "created"
        )
    }
    attempts = [a for r in replies for a in r["attempts"]]
    events = [e for r in replies for e in r["events"]]
    verdict = judge(opts, conf.replay_limit(), rows, client_user, attempts, events)
    verdict["settle_timed_out"] = any(r["timed_out"] for r in settled)
    # Clients that never got their user's newest row, even after coming back.
    verdict["clients_short_of_newest"] = sum(r["short_of_target"] for r in settled)
    verdict["storm"] = storm(attempts, done_faults)
    verdict["listen_queues"] = listen_queues
    verdict["ok"] = (
        verdict["streams_failed"] == 0
        and verdict["lost_by_a_client"] == 0
        and verdict["received_twice_by_a_client"] == 0
        and verdict["storm"]["failed_connections"] == 0
    )
    return {
        "options": opts.__dict__,
        "verdict": verdict,
        "faults": [f.__dict__ for f in done_faults],
        "hubs": hubs,
    }


def judge(
    opts: Options,
    replay_limit: int,
    rows: dict[int, tuple[int, float]],
    client_user: dict[int, int],
    attempts: list[dict[str, Any]],
    events: list[tuple[int, int, int, float, int]],
) -> dict[str, Any]:
    """Check every stream and every client against the rows created."""
    by_user: dict[int, list[int]] = defaultdict(list)
    for pk in sorted(rows):
        by_user[rows[pk][0]].append(pk)
    received: dict[tuple[int, int], Counter[int]] = defaultdict(Counter)
    arrivals: dict[tuple[int, int, int], float] = {}
    for client, number, pk, arrived, _chunk in events:
        received[(client, number)][pk] += 1
        arrivals.setdefault((client, number, pk), arrived)
    by_client: dict[int, Counter[int]] = defaultdict(Counter)
    totals: Counter[str] = Counter()
    failed_examples: list[dict[str, Any]] = []
    examples_by_kind: Counter[str] = Counter()
    waited: list[float] = []
    latencies: list[float] = []
    # Live latencies by when the row was created, from the first stream's opening.
    timeline: dict[int, list[float]] = defaultdict(list)
    origin = min((a["opened"] for a in attempts if a["opened"] is not None), default=0.0)
    streams = 0
    for attempt in attempts:
        key = (attempt["client"], attempt["number"])
        got = received.get(key, Counter())
        if attempt["opened"] is None:
            continue
        streams += 1
        user_id = client_user[attempt["client"]]
        cursor, opened, closed = attempt["cursor"], attempt["opened"], attempt["closed"]
        mine = by_user[user_id]
        after_cursor = [pk for pk in mine if pk > cursor]
        # Rows there before the stream opened come by replay, the newest `replay_limit` only
        # (NOTIFICATIONS_REPLAY_LIMIT: the bench reads the servers' settings). A row is due
        # once the stream was open and the row existed for `grace` seconds.
        before = [pk for pk in after_cursor if rows[pk][1] < opened]
        beyond_limit = set(before[: max(0, len(before) - replay_limit)])
        expected = {
            pk
            for pk in after_cursor
            if max(rows[pk][1], opened) <= closed - opts.grace and pk not in beyond_limit
        }
        counts = {
            "lost": len(expected - set(got)),
            "received_twice": sum(1 for c in got.values() if c > 1),
            "wrong_user": sum(1 for pk in got if pk not in rows or rows[pk][0] != user_id),
            "at_or_below_cursor": sum(1 for pk in got if pk <= cursor),
        }
        totals.update(counts)
        for pk in expected - set(got):
            # How long the stream had to get the row: just above the grace means it was late.
            waited.append(closed - max(rows[pk][1], opened))
        totals["beyond_replay_limit"] += len(beyond_limit)
        if any(counts.values()):
            totals["streams_failed"] += 1
            # A few examples of each kind of failure.
            kinds = [k for k, v in counts.items() if v]
            if any(examples_by_kind[k] < 4 for k in kinds):
                for k in kinds:
                    examples_by_kind[k] += 1
                missing = sorted(expected - set(got))[:5]
                failed_examples.append(
                    {
                        **attempt,
                        "user": user_id,
                        **counts,
                        "missing_ids": missing,
                        # Seconds from the row's creation to the stream's end.
                        "missing_created_before_end_s": [
                            round(closed - rows[pk][1], 2) for pk in missing
                        ],
                        "received_ids": sorted(got)[:20],
                        "at_or_below_cursor_ids": sorted(pk for pk in got if pk <= cursor)[:5],
                    }
                )
        for pk, count in got.items():
            if pk in rows and rows[pk][0] == user_id:
                by_client[attempt["client"]][pk] += count
                created = rows[pk][1]
                if created >= opened:
                    latencies.append(arrivals[(*key, pk)] - created)
                    timeline[int((created - origin) // LATENCY_WINDOW)].append(
                        arrivals[(*key, pk)] - created
                    )
    lost_by_client = twice_by_client = 0
    clients_missing = 0
    for client, user_id in client_user.items():
        never = set(by_user[user_id]) - set(by_client[client])
        lost_by_client += len(never)
        clients_missing += bool(never)
        twice_by_client += sum(1 for count in by_client[client].values() if count > 1)
    statuses = Counter(str(a["status"]) for a in attempts)
    errors = Counter(a["error"] for a in attempts if a["status"] == 0)
    return {
        "rows": len(rows),
        "clients": len(client_user),
        "connections_attempted": len(attempts),
        "streams": streams,
        "streams_failed": totals["streams_failed"],
        "lost": totals["lost"],
        # For the rows lost on a stream: seconds the stream was open after the row existed.
        "lost_rows_had_s": {
            "min": round(min(waited), 2) if waited else None,
            "median": round(sorted(waited)[len(waited) // 2], 2) if waited else None,
            "max": round(max(waited), 2) if waited else None,
        },
        "received_twice": totals["received_twice"],
        "wrong_user": totals["wrong_user"],
        "at_or_below_cursor": totals["at_or_below_cursor"],
        "beyond_replay_limit": totals["beyond_replay_limit"],
        "lost_by_a_client": lost_by_client,
        "clients_missing_rows": clients_missing,
        # On two of the client's connections (or twice on one): a replay below what it had.
        "received_twice_by_a_client": twice_by_client,
        "statuses": dict(statuses),
        "no_answer": dict(errors),
        "live_latency": percentiles(latencies),
        "live_latency_over_time": [
            {
                "from_s": index * LATENCY_WINDOW,
                "deliveries": len(timeline[index]),
                **percentiles(timeline[index]),
            }
            for index in sorted(timeline)
        ],
        "failed_examples": failed_examples,
    }


def storm(attempts: list[dict[str, Any]], done: list[Fault]) -> dict[str, Any]:
    """Sort the connection attempts that got no answer.

    Expected: on the killed process, those cut by the kill (within KILL_MARGIN) and those
    refused until it listened again. Failures: every other one. On the killed process after
    the kill they are the reconnect storm's (refused once listening, reset, closed or not
    answered in time); on the others, whatever they met at any time.
    """
    kill = next((f for f in done if f.kind == "kill"), None)
    listening = kill.listening if kill is not None and kill.listening is not None else math.inf
    at_kill = while_down = 0
    in_storm: Counter[str] = Counter()
    elsewhere: Counter[str] = Counter()
    examples: list[dict[str, Any]] = []
    storm_attempts = storm_opened = 0
    first_back: dict[int, float] = {}
    for attempt in attempts:
        on_killed = kill is not None and attempt["server"] == kill.server
        after_kill = kill is not None and attempt["requested"] >= kill.at - KILL_MARGIN
        if on_killed and after_kill and attempt["requested"] <= listening + STORM_WINDOW:
            storm_attempts += 1
            if attempt["opened"] is not None:
                storm_opened += 1
                client = attempt["client"]
                first_back[client] = min(first_back.get(client, math.inf), attempt["opened"])
        if attempt["status"] != 0:
            continue
        ended = attempt["closed"] or attempt["requested"]
        if on_killed and kill is not None and ended >= kill.at:
            # Cut by the kill, whenever it was requested.
            if ended <= kill.at + KILL_MARGIN:
                at_kill += 1
                continue
            # Refused: by the closed port if it was tried before the process was seen
            # listening (the client may notice the refusal later, when its loop is busy).
            if attempt["error"] == "ConnectionRefusedError" and attempt["requested"] <= listening:
                while_down += 1
                continue
            in_storm[attempt["error"]] += 1
        else:
            elsewhere[attempt["error"]] += 1
        if len(examples) < 20:
            examples.append(
                {
                    "server": attempt["server"],
                    "error": attempt["error"],
                    "after_kill_s": None if kill is None else round(ended - kill.at, 2),
                    "after_listening_s": None
                    if listening == math.inf
                    else round(ended - listening, 2),
                }
            )
    answered_5xx = Counter(str(a["status"]) for a in attempts if a["status"] >= 500)
    result: dict[str, Any] = {
        "failed_connections": sum(in_storm.values()) + sum(elsewhere.values()),
        "failed_in_storm": dict(in_storm),
        "failed_elsewhere": dict(elsewhere),
        "failed_examples": examples,
        "cut_by_the_kill": at_kill,
        "refused_while_down": while_down,
        "answered_5xx": dict(answered_5xx),
    }
    if kill is not None and kill.listening is not None:
        back = sorted(first_back.values())
        result.update(
            {
                "down_seconds": round(kill.listening - kill.at, 2),
                "storm_attempts": storm_attempts,
                "storm_opened": storm_opened,
                "clients_back": len(back),
                "clients_back_within_1_s": sum(1 for t in back if t - kill.listening <= 1.0),
                "all_back_after_s": round(back[-1] - kill.listening, 2) if back else None,
            }
        )
    return result
