"""The fault run's clients: devices pinned to a server, coming and going with Last-Event-ID.

Each client keeps its cursor (the last id field it read, as a browser's EventSource does)
across its connections and sends it on every one, as a page passes its cursor to a new
EventSource. A connection the server ends
(the process was killed) is retried at once, and so is one that fails to open (the process is
down, or answered 5xx): that is the reconnect storm a restart causes. Every connection attempt
is recorded with its outcome and times, for the verdict.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from .client import ID_ONLY, StreamError, Worker, open_stream

STREAM_PATH = "/notifications/stream/"


@dataclass
class Attempt:
    """One connection attempt of a client."""

    client: int
    number: int
    server: int
    cursor: int
    requested: float
    # When the stream was open (its opening `retry:` field read), when it closed or failed.
    opened: float | None = None
    closed: float | None = None
    # 200, the answer's status, or 0 (no answer: `error` says what happened).
    status: int = 0
    error: str = ""
    # "client" (it left), "server" (the stream ended under it), "" (it never opened).
    ended_by: str = ""


@dataclass
class Client:
    """A device: its user's session, the server it is pinned to, its cursor."""

    client: int
    key: str
    server: int
    cursor: int
    number: int = 0
    # The highest id of a notification it received.
    highest: int = 0


@dataclass
class FaultWorker(Worker):
    """A client process of the fault run."""

    attempts: list[Attempt] = field(default_factory=list)
    clients: dict[int, Client] = field(default_factory=dict)

    async def _connect_once(
        self,
        client: Client,
        port: int,
        until: Callable[[], bool],
        on_open: Callable[[], None] = lambda: None,
        stay: float = math.inf,
    ) -> Attempt:
        """Open one connection from the client's cursor; read until `until()`, for `stay`
        seconds from its opening, or until the server ends it.

        `on_open` is called once the stream is open.
        """
        attempt = Attempt(client.client, client.number, client.server, client.cursor, time.time())
        client.number += 1
        self.attempts.append(attempt)
        try:
            stream = await open_stream(port, STREAM_PATH, client.key, client.cursor)
        except StreamError as exc:
            attempt.status = exc.status
            attempt.error = exc.kind
            attempt.closed = time.time()
            return attempt
        except TimeoutError:
            attempt.error = "TimeoutError"
            attempt.closed = time.time()
            return attempt
        attempt.status = 200
        attempt.opened = time.time()
        leave = time.monotonic() + stay
        on_open()

        async def read() -> None:
            async for event_id, name, arrived, chunk in stream.events():
                if event_id is None:
                    continue
                # As a browser: the last id field read, whether or not the block is an event.
                client.cursor = event_id
                if name != ID_ONLY:
                    self.events.append((client.client, attempt.number, event_id, arrived, chunk))
                    self.last_event = arrived
                    client.highest = max(client.highest, event_id)

        reader = asyncio.create_task(read())
        try:
            # A condition on the clock and on other clients, checked every 50 ms.
            while not until() and time.monotonic() < leave and not reader.done():  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        finally:
            attempt.ended_by = "server" if reader.done() else "client"
            stream.close()
            reader.cancel()
            with contextlib.suppress(
                asyncio.CancelledError, OSError, EOFError, ValueError, asyncio.IncompleteReadError
            ):
                await reader
            attempt.closed = time.time()
        return attempt

    async def do_faults(
        self,
        ports: Sequence[int],
        clients: Sequence[tuple[int, str, int, int]],
        duration: float,
        stay: tuple[float, float],
        pause: float,
        retry: tuple[float, float],
        seed: int,
    ) -> dict[str, Any]:
        """Connect and leave for `duration` seconds, each client on its own server.

        `clients`: (client, session key, server index, first cursor). A client stays
        `stay` s, leaves for up to `pause` s, and comes back; when its stream ends or does
        not open, it tries again after `retry` s.
        """
        self.attempts = []
        self.clients = {c: Client(c, key, server, cursor) for c, key, server, cursor in clients}
        end = time.monotonic() + duration
        rng = random.Random(seed)

        async def client_loop(client: Client) -> None:
            while time.monotonic() < end:
                attempt = await self._connect_once(
                    client,
                    ports[client.server],
                    lambda: time.monotonic() >= end,
                    stay=rng.uniform(*stay),
                )
                if attempt.ended_by == "client":
                    await asyncio.sleep(
                        min(rng.uniform(0, pause), max(0.0, end - time.monotonic()))
                    )
                else:
                    await asyncio.sleep(rng.uniform(*retry))

        await asyncio.gather(*(client_loop(c) for c in self.clients.values()))
        return {"attempts": len(self.attempts)}

    async def do_come_back(
        self,
        ports: Sequence[int],
        targets: dict[int, int],
        quiet: float,
        limit: float,
        retry: tuple[float, float],
        seed: int,
    ) -> dict[str, Any]:
        """Bring every client back from its cursor until it has received up to its target.

        `targets`: client -> the highest id of its user's rows. Once every client is back and
        at its target (or has read nothing for `quiet` s after that), stay `quiet` s more for
        stragglers. A connection that fails or ends is tried again until the `limit` (seconds).
        """
        rng = random.Random(seed)
        deadline = time.monotonic() + limit
        opened: set[int] = set()
        self.last_event = time.time()
        reached_at: float | None = None

        def done() -> bool:
            nonlocal reached_at
            if time.monotonic() >= deadline:
                return True
            if len(opened) < len(self.clients):
                return False
            if reached_at is None:
                reached = all(c.highest >= targets.get(c.client, 0) for c in self.clients.values())
                if not reached:
                    # A client short of its target: wait for what is still to come.
                    return False
                reached_at = time.time()
            return time.time() - max(reached_at, self.last_event) >= quiet

        async def back(client: Client) -> None:
            def is_back() -> None:
                if client.client not in opened:
                    opened.add(client.client)
                    if len(opened) == len(self.clients):
                        # Quiet is counted from the moment every client is back.
                        self.last_event = max(self.last_event, time.time())

            while not done():
                attempt = await self._connect_once(client, ports[client.server], done, is_back)
                if attempt.ended_by != "client":
                    await asyncio.sleep(rng.uniform(*retry))

        await asyncio.gather(*(back(c) for c in self.clients.values()))
        return {
            "timed_out": time.monotonic() >= deadline,
            "back": len(opened),
            "short_of_target": sum(
                1 for c in self.clients.values() if c.highest < targets.get(c.client, 0)
            ),
        }

    async def do_fault_results(self) -> dict[str, Any]:
        events, self.events = self.events, []
        return {
            "events": events,
            "attempts": [a.__dict__ for a in self.attempts],
            "cursors": {c.client: c.cursor for c in self.clients.values()},
        }


def fault_worker_main(pipe: Connection) -> None:
    asyncio.run(FaultWorker(pipe).run())
