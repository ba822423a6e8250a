"""Run this repository's site (or any daphne command) on 127.0.0.1, for the tests and the
benchmark alike. Standard library only: importing it needs no Django set-up."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

# The repository's root, where manage.py is and where the servers run.
PROJECT = Path(__file__).resolve().parent.parent
_LISTENING = re.compile(r"Listening on TCP address 127\.0\.0\.1:(\d+)")


@dataclass
class DaphneServer:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def status(self) -> dict[str, int]:
        """Return the server process's OS thread count and resident memory (KiB)."""
        fields = {}
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("Threads", "VmRSS"):
                fields[key] = int(value.split()[0])
        return fields

    def open_files(self, path: str) -> int:
        """Return how many descriptors the server process holds open on `path`."""
        count = 0
        for fd in Path(f"/proc/{self.process.pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                count += os.readlink(fd) == path
        return count


@contextlib.contextmanager
def start_daphne(
    env: dict[str, str],
    log: Path,
    timeout: float = 30,
    port: int = 0,
    backlog: int | None = None,
    application: str = "site_config.asgi:application",
) -> Iterator[DaphneServer]:
    """Run this repository's site (or another ASGI `application`) under daphne on 127.0.0.1
    (a free port unless `port` is given).

    The log is appended to, so a server restarted on the same port can share it. `backlog`:
    the listen queue's length (Twisted's default, 50, without it; the kernel caps it at
    net.core.somaxconn).
    """
    if backlog is None:
        listen = ["-b", "127.0.0.1", "-p", str(port)]
    else:
        listen = ["-e", f"tcp:port={port}:interface=127.0.0.1:backlog={backlog}"]
    command = [sys.executable, "-m", "daphne", *listen]
    with run_daphne([*command, application], PROJECT, env, log, timeout) as server:
        yield server


@contextlib.contextmanager
def run_daphne(
    command: Sequence[str], cwd: Path, env: dict[str, str], log: Path, timeout: float = 30
) -> Iterator[DaphneServer]:
    """Run a daphne command that listens on 127.0.0.1; wait until it listens; stop it on exit.

    Its output is appended to `log`, where the port it listens on is read (`-p 0` picks a free one).
    """
    offset = log.stat().st_size if log.exists() else 0
    with log.open("ab") as out:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while True:
            with log.open("rb") as written:
                written.seek(offset)
                match = _LISTENING.search(written.read().decode(errors="replace"))
            if match:
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"daphne did not start:\n{log.read_text(errors='replace')}")
            time.sleep(0.05)
        yield DaphneServer(process, int(match.group(1)), log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
