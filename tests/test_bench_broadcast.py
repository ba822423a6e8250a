"""The broadcast run (bench/scale.py) end to end, small: one INSERT for every connected user
on two daphne processes; every stream gets its row, and the round's CPU is recorded."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from .support import run_bench

# It runs on PostgreSQL only (INSERT ... SELECT with now()), in a database of its own.
pytestmark = pytest.mark.postgresql


def test_every_connected_user_gets_the_broadcast_row(tmp_path: Path) -> None:
    parts = urlsplit(os.environ["DATABASE_URL"])
    # A name of its own (the bench drops and recreates the database it is given).
    url = urlunsplit(parts._replace(path=f"/bench_broadcast_test_{uuid.uuid4().hex[:8]}"))
    out = tmp_path / "broadcast.json"
    logs = tmp_path / "logs"
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env["DATABASE_URL"] = url
    result = run_bench(
        "broadcast",
        *("--users", "40", "--processes", "2", "--rounds", "2"),
        *("--settle", "0.2", "--deliver-timeout", "10"),
        env=env,
        out=out,
        logs=logs,
    )
    assert [r["rows"] for r in result["rounds"]] == [40, 40]
    for one in result["rounds"]:
        assert one["arrived"] == one["expected"] == 40, one
        assert 0 <= one["first_ms"] <= one["p50_ms"] <= one["last_ms"], one
        assert len(one["server_cpu_s"]) == 2, one
        # Read for each server (None: not read); so small a run may take under one
        # 10 ms tick, so no amount is asserted here (tests/test_bench_cpu.py does that).
        assert all(s is not None and s >= 0 for s in one["server_cpu_s"]), one
        assert one["client_cpu_s"] >= 0, one
    assert result["duplicates"] == 0
    assert result["wrong_user"] == 0
    assert result["verdict"]["ok"] is True
    daphne_logs = sorted(logs.glob("daphne-broadcast-*.log"))
    assert len(daphne_logs) == 2, daphne_logs
    for path in daphne_logs:
        assert "Exception inside application" not in path.read_text(), path
