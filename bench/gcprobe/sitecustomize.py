"""A garbage-collection probe for the benchmark's daphne servers (not loaded otherwise).

    BENCH_GC_LOG=/tmp/gc PYTHONPATH=$PWD/bench/gcprobe bin/bench broadcast
    python -m bench.gclog /tmp/gc

With PYTHONPATH pointing here, every Python process the run starts imports this module at
start; in a daphne process, with BENCH_GC_LOG set, it appends a line per collection to
BENCH_GC_LOG/gc-PID.log: the time it ended, the generation, its milliseconds, what it freed.
"""

import gc
import os
import sys
import time

_folder = os.environ.get("BENCH_GC_LOG")
if _folder and "daphne" in getattr(sys, "orig_argv", ()):
    os.makedirs(_folder, exist_ok=True)
    _log = open(os.path.join(_folder, f"gc-{os.getpid()}.log"), "a", buffering=1)  # noqa: SIM115
    _started = [0.0]

    def _probe(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            _started[0] = time.perf_counter()
            return
        took = (time.perf_counter() - _started[0]) * 1000
        _log.write(f"{time.time():.3f} {info['generation']} {took:.3f} {info['collected']}\n")

    gc.callbacks.append(_probe)
