"""The benchmark's garbage-collection probe (bench/gcprobe) and its summary (bench/gclog)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from bench.gclog import summarize

PROJECT = Path(__file__).resolve().parent.parent


def test_the_probe_logs_each_collection_of_a_daphne_process_and_only_there(
    tmp_path: Path,
) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(PROJECT / "bench" / "gcprobe"),
        "BENCH_GC_LOG": str(tmp_path),
    }
    collect = "import gc; gc.collect(0); gc.collect(2)"
    # The probe looks for "daphne" in the command line: here an argument of a plain script.
    subprocess.run([sys.executable, "-c", collect, "daphne"], env=env, check=True, timeout=30)
    subprocess.run([sys.executable, "-c", collect], env=env, check=True, timeout=30)

    (log,) = tmp_path.glob("gc-*.log")
    rows = [line.split() for line in log.read_text().splitlines()]
    generations = [int(row[1]) for row in rows]
    assert 0 in generations and 2 in generations, rows
    assert all(float(row[2]) >= 0 and int(row[3]) >= 0 for row in rows), rows


def test_the_summary_adds_each_seconds_collections_by_generation(tmp_path: Path) -> None:
    second = 1_796_300_000
    (tmp_path / "gc-7.log").write_text(
        f"{second}.100 0 1.500 3\n{second}.200 0 0.500 0\n{second}.900 2 90.000 12\n"
        f"{second + 1}.100 1 4.000 1\n"
    )
    clock = time.strftime("%H:%M:%S", time.gmtime(second))
    later = time.strftime("%H:%M:%S", time.gmtime(second + 1))

    lines = summarize(tmp_path, None, None).splitlines()

    assert lines[1].split() == [clock, "2", "2.0", "0", "0.0", "1", "90.0"]
    assert lines[2].split() == [later, "0", "0.0", "1", "4.0", "0", "0.0"]
    assert lines[3].split() == ["total", "2", "2.0", "1", "4.0", "1", "90.0"]
    only_later = summarize(tmp_path, later, None).splitlines()
    assert only_later[-1].split() == ["total", "0", "0.0", "1", "4.0", "0", "0.0"]
