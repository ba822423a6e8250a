"""The floor run (bench/floor.py) end to end, small: every stream of both variants gets each
round's event, on two daphne processes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .support import run_bench

# It brings its own SQLite file and touches no database while it measures: once is enough.
pytestmark = pytest.mark.sqlite


def test_every_stream_gets_each_rounds_event_on_both_variants(tmp_path: Path) -> None:
    out = tmp_path / "floor.json"
    logs_dir = tmp_path / "logs"
    env = {
        k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DJANGO_SETTINGS_MODULE")
    }
    result = run_bench(
        "floor",
        *("--streams", "40", "--processes", "2", "--rounds", "2"),
        *("--settle", "0.2", "--deliver-timeout", "5"),
        env=env,
        out=out,
        logs=logs_dir,
    )
    for variant in ("raw", "django"):
        one = result["variants"][variant]
        assert one["opened"] == 40
        assert [r["arrived"] for r in one["rounds"]] == [40, 40]
        assert one["missing"] == 0
        for r in one["rounds"]:
            assert 0 <= r["first_ms"] <= r["p50_ms"] <= r["last_ms"], r
            assert len(r["server_cpu_s"]) == 2, r
            # Read for each server (None: not read); so small a run may take under one
            # 10 ms tick, so no amount is asserted here (tests/test_bench_cpu.py does that).
            assert all(s is not None and s >= 0 for s in r["server_cpu_s"]), r
            assert r["client_cpu_s"] >= 0, r
    assert result["verdict"]["ok"] is True
    logs = sorted(logs_dir.glob("daphne-floor-*.log"))
    assert len(logs) == 4, logs
    for path in logs:
        assert "Exception inside application" not in path.read_text(), path
