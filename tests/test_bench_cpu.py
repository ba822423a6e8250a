"""The benchmark's CPU readings (bench/server.py): from /proc, per process."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from bench.server import cpu_of, cpu_seconds, cpu_spent


def test_a_busy_process_is_read_with_its_cpu_and_a_gone_one_as_none() -> None:
    before = cpu_seconds(os.getpid())
    deadline = time.process_time() + 0.2
    while time.process_time() < deadline:
        pass
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    readings = cpu_of([os.getpid(), int(gone.stdout)])

    assert readings[0] is not None and readings[0] - before >= 0.15
    assert readings[1] is None


def test_spent_is_the_difference_and_none_where_a_reading_is_missing() -> None:
    assert cpu_spent([1.0, 2.0, None], [1.5, None, 3.0]) == [0.5, None, None]
