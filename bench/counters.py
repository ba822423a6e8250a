"""Instrumentation of the server process under benchmark: statements run, claims made.

Every database connection the process opens through Django (the hub's, a request's, the naive
streams') gets an execute wrapper that counts its statements by kind. `PRAGMA data_version`
(SQLite's change check, microseconds, no table read) is counted apart from real queries, by a
trace callback on the sqlite3 connection, so that it is counted also when run on that
connection directly.

With BENCH_CLAIM_LOG set, every claim and release of notifications is appended to that file
(the churn run's server-side proof that no row is claimed twice).
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

_lock = threading.Lock()
_statements: Counter[str] = Counter()
_connections = 0


def snapshot() -> dict[str, Any]:
    """Return the counters so far: statements by kind, and connections opened."""
    with _lock:
        kinds = dict(_statements)
        opened = _connections
    checks = kinds.get("change_check", 0)
    return {
        "queries": sum(kinds.values()) - checks,
        "change_checks": checks,
        "by_kind": kinds,
        "connections_opened": opened,
    }


def kind(sql: str) -> str:
    head = sql.lstrip()[:32].upper()
    if head.startswith("PRAGMA DATA_VERSION"):
        return "change_check"
    word = head.split(None, 1)[0] if head else ""
    return word.lower() if word in {"SELECT", "INSERT", "UPDATE", "DELETE"} else "other"


def _count(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
    statement = kind(sql)
    # On SQLite the trace callback counts change checks, whichever way they are run.
    if statement != "change_check" or context["connection"].vendor != "sqlite":
        with _lock:
            _statements[statement] += 1
    return execute(sql, params, many, context)


def _trace(sql: str) -> None:
    if kind(sql) == "change_check":
        with _lock:
            _statements["change_check"] += 1


def count_statements(sender: Any, connection: Any, **kwargs: Any) -> None:
    """Count the statements of a connection (connection_created receiver)."""
    global _connections
    with _lock:
        _connections += 1
    # The wrapper list belongs to the DatabaseWrapper, which outlives its connections.
    if _count not in connection.execute_wrappers:
        connection.execute_wrappers.append(_count)
    if connection.vendor == "sqlite":
        # Also sees statements run on the sqlite3 connection itself, bypassing Django's
        # cursors (a change check can be run that way).
        connection.connection.set_trace_callback(_trace)


def log_claims() -> None:
    """With BENCH_CLAIM_LOG set, append each claim and release to that file."""
    path = os.environ.get("BENCH_CLAIM_LOG")
    if not path:
        return
    from notifications import queries

    claim = getattr(queries, "claim", None)
    release = getattr(queries, "release", None)
    if claim is None or release is None:
        return
    log = open(path, "a", buffering=1)  # noqa: SIM115 - lives as long as the process
    write_lock = threading.Lock()

    def write(tag: str, stamp: float, ids: Sequence[int]) -> None:
        if ids:
            with write_lock:
                log.write(f"{tag} {stamp:.6f} {os.getpid()} {' '.join(map(str, ids))}\n")

    def logged_claim(ids: Sequence[int]) -> Any:
        claimed = claim(ids)
        # After the claim: a row claimed here was free when the statement committed.
        write("C", time.time(), [n.pk for n in claimed])
        return claimed

    def logged_release(ids: Sequence[int]) -> Any:
        # Before the release: the rows become claimable again from here on at the earliest.
        write("R", time.time(), list(ids))
        return release(ids)

    queries.claim = logged_claim
    queries.release = logged_release
