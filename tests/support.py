"""Helpers for the tests: the daphne runner's environment on the test database (the runner is
tools/daphne_runner.py, shared with the benchmark), an SSE reader, waiting with a timeout,
PgBouncer, Chromium's launch options and a browser context that fails on page errors."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractUser
from django.db import connection, transaction
from django.test import Client
from httpx_sse import ServerSentEvent, aconnect_sse

from notifications.models import Notification
from tools.daphne_runner import PROJECT, DaphneServer, run_daphne, start_daphne

__all__ = ["PROJECT", "DaphneServer", "run_daphne", "start_daphne"]


# How the server's PostgreSQL connections name themselves in pg_stat_activity.
SERVER_APPLICATION_NAME = "notifications-test-server"


def database_url(application_name: str = "", *, host: str = "", port: int | None = None) -> str:
    """Return a DATABASE_URL for the test database this process uses.

    `host` and `port`: reach it there instead (a pooler in front of PostgreSQL).
    """
    settings = connection.settings_dict
    if settings["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{settings['NAME']}"
    user = quote(settings.get("USER") or "", safe="")
    password = quote(settings.get("PASSWORD") or "", safe="")
    credentials = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    host = host or settings.get("HOST") or "127.0.0.1"
    port = port or settings.get("PORT")
    at_port = f":{port}" if port else ""
    query = f"?application_name={quote(application_name)}" if application_name else ""
    return f"postgres://{credentials}{host}{at_port}/{settings['NAME']}{query}"


def server_env(application_name: str = SERVER_APPLICATION_NAME, **settings: str) -> dict[str, str]:
    """Return the environment of a daphne server on the test database, with these settings."""
    return {
        **os.environ,
        "DATABASE_URL": database_url(application_name=application_name),
        "DEBUG": "false",
        "ALLOWED_HOSTS": "127.0.0.1",
        **settings,
    }


async def wait_until(predicate: Callable[[], Any], timeout: float = 10, what: str = "") -> Any:
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        await asyncio.sleep(0.01)


@dataclass
class StreamReader:
    """A real SSE client (httpx-sse) reading one stream in the background."""

    client: httpx.AsyncClient
    path: str = "/notifications/stream/"
    headers: dict[str, str] = field(default_factory=dict)
    # The event names queued (read and deleted events too, when a test asks for them).
    names: tuple[str, ...] = ("notification",)
    status: int | None = None
    response_headers: httpx.Headers | None = None
    events: asyncio.Queue[ServerSentEvent] = field(default_factory=asyncio.Queue)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    opened: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> StreamReader:
        self._task = asyncio.create_task(self._read())
        await asyncio.wait_for(self.opened.wait(), 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _read(self) -> None:
        try:
            async with aconnect_sse(self.client, "GET", self.path, headers=self.headers) as source:
                self.status = source.response.status_code
                self.response_headers = source.response.headers
                self.opened.set()
                if self.status != 200:
                    return
                async for event in source.aiter_sse():
                    if event.event in self.names:
                        await self.events.put(event)
        finally:
            self.opened.set()
            self.ended.set()

    async def next(self, timeout: float = 10) -> ServerSentEvent:
        return await asyncio.wait_for(self.events.get(), timeout)


def pgbouncer_path() -> str | None:
    """Return the pgbouncer executable (Debian installs it in /usr/sbin), or None."""
    return shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/usr/bin")


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class PgBouncer:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    def database_url(self, application_name: str = "") -> str:
        """Return a DATABASE_URL for the test database through this pooler."""
        return database_url(application_name, host="127.0.0.1", port=self.port)


@contextlib.contextmanager
def start_pgbouncer(directory: Path, timeout: float = 15) -> Iterator[PgBouncer]:
    """Run PgBouncer in transaction pooling mode in front of the test PostgreSQL database.

    On 127.0.0.1, on a free port, with trust authentication (the test server's own). PgBouncer
    refuses to run as root; as root it is started with `-u nobody`, its documented way to drop
    privileges (it reads its configuration and auth file before, so they may stay private).
    """
    executable = pgbouncer_path()
    if executable is None:
        raise RuntimeError("pgbouncer is not installed (Debian: apt-get install pgbouncer)")
    settings = connection.settings_dict
    host = settings.get("HOST") or "127.0.0.1"
    server_port = settings.get("PORT") or 5432
    user = settings.get("USER") or "postgres"
    port = free_port()
    config = directory / "pgbouncer.ini"
    auth_file = directory / "userlist.txt"
    log = directory / "pgbouncer.log"
    auth_file.write_text(f'"{user}" ""\n')
    config.write_text(
        "[databases]\n"
        f"* = host={host} port={server_port}\n"
        "[pgbouncer]\n"
        "listen_addr = 127.0.0.1\n"
        f"listen_port = {port}\n"
        "unix_socket_dir =\n"
        "auth_type = trust\n"
        f"auth_file = {auth_file}\n"
        "pool_mode = transaction\n"
        # psycopg and Django send these at connect; PgBouncer refuses unknown ones.
        "ignore_startup_parameters = extra_float_digits,options\n"
        # Logged to stderr (the log file below): a logfile would be opened after -u.
        "logfile =\n"
        "pidfile =\n"
    )
    command = [executable]
    if os.geteuid() == 0:
        command += ["-u", "nobody"]
    command.append(str(config))
    with log.open("ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"pgbouncer did not start:\n{log.read_text(errors='replace')}")
            time.sleep(0.05)
        yield PgBouncer(process, port, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def ids_in(chunk: str) -> list[int]:
    """Return the event ids in a chunk of a stream."""
    return [int(line[4:]) for line in chunk.split("\n") if line.startswith("id: ")]


async def next_chunk(stream: object, timeout: float = 10) -> str:
    """Return the next chunk a stream generator yields, as UTF-8 text (the stream yields
    bytes), failing after `timeout` seconds."""
    chunk = await asyncio.wait_for(anext(stream), timeout)  # type: ignore[call-overload]
    assert isinstance(chunk, bytes), f"the stream yields bytes, not {type(chunk).__name__}"
    return chunk.decode()


# A second database alias on the test database itself: what a router points at is then
# visible by which alias a thread opened, with the data shared.
MIRROR = "mirror"


class NotificationsToMirror:
    """A database router that puts notifications on the "mirror" alias, the rest on default."""

    def db_for_read(self, model: type[Any], **hints: Any) -> str | None:
        return MIRROR if model._meta.label == "notifications.Notification" else None

    db_for_write = db_for_read

    def allow_relation(self, *objects: Any, **hints: Any) -> bool:
        return True


class EverythingToMirror:
    """A database router that puts every model (sessions and users too) on "mirror"."""

    def db_for_read(self, model: type[Any], **hints: Any) -> str:
        return MIRROR

    db_for_write = db_for_read

    def allow_relation(self, *objects: Any, **hints: Any) -> bool:
        return True


class OpenTransaction:
    """A transaction in a thread of its own that inserted a row and has not committed yet."""

    def __init__(self, user: AbstractUser, text: str) -> None:
        self._user, self._text = user, text
        self._inserted = threading.Event()
        self._finish = threading.Event()
        self._done = threading.Event()
        self.pk = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            with transaction.atomic():
                self.pk = Notification.objects.create(user_id=self._user.pk, text=self._text).pk
                self._inserted.set()
                self._finish.wait(60)
        finally:
            connection.close()
            self._inserted.set()
            self._done.set()

    async def __aenter__(self) -> OpenTransaction:
        self._thread.start()
        assert await asyncio.to_thread(self._inserted.wait, 10), "the insert did not happen"
        assert self.pk, "the insert failed"
        return self

    async def commit(self) -> None:
        self._finish.set()
        assert await asyncio.to_thread(self._done.wait, 10), "the commit did not happen"

    async def __aexit__(self, *exc: object) -> None:
        self._finish.set()
        await asyncio.to_thread(self._thread.join, 10)


# Debian's Chromium, driven by Playwright through executable_path: the suite never downloads
# a browser of its own.
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

# What the browser logs for a refused or failed request (the tests cause 403s, 429s and
# outages on purpose); anything else logged as an error fails the test.
NETWORK_ERROR = re.compile(r"^Failed to load resource: |net::ERR_")


@contextlib.asynccontextmanager
async def checked_context(browser: Any) -> AsyncIterator[Any]:
    """A browser context (a device of its own) whose pages must log no errors."""
    context = await browser.new_context()
    errors: list[str] = []

    def watch(page: Any) -> None:
        def logged(message: Any) -> None:
            if message.type == "error" and not NETWORK_ERROR.search(message.text):
                errors.append(f"{page.url}: {message.text}")

        page.on("pageerror", lambda error: errors.append(f"{page.url}: {error}"))
        page.on("console", logged)

    context.on("page", watch)
    try:
        yield context
    finally:
        await context.close()
    assert errors == [], "the pages logged errors"


def make_user(username: str, **extra: object) -> AbstractUser:
    user = get_user_model().objects.create_user(username=username, password=None, **extra)
    assert isinstance(user, AbstractUser)
    return user


def session_for(user: AbstractUser) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


def run_bench(
    mode: str, *args: str, env: dict[str, str], out: Path, logs: Path, timeout: float = 110
) -> dict[str, Any]:
    """Run `python -m bench MODE ARGS` to the end; return what it wrote to its --json file.

    Fails the test with the run's output when the run fails. A run still going at `timeout`
    is stopped as an interrupted run is (SIGTERM: it stops its servers and clients and drops
    its database), and killed with its process group if that takes over 30 s.
    """
    import json
    import signal
    import sys

    with subprocess.Popen(
        [sys.executable, "-m", "bench", mode, *args, "--json", str(out), "--logs", str(logs)],
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    ) as run:
        try:
            output, _ = run.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            run.send_signal(signal.SIGTERM)
            try:
                output, _ = run.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(run.pid, signal.SIGKILL)
                output, _ = run.communicate()
            message = f"bench {mode} still ran after {timeout:.0f} s:\n{output}"
            raise AssertionError(message) from None
    assert run.returncode == 0, output
    result: dict[str, Any] = json.loads(out.read_text())
    return result
