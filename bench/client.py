"""The benchmark's SSE client: raw asyncio HTTP/1.1, many streams per process.

Client processes (`ClientPool`) each run one event loop holding thousands of streams, so the
client is not what limits the server. They take orders over a pipe and keep what they receive
(event id, arrival time.time()) until the parent collects it. Nothing here imports Django.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import random
import socket
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

OPEN_TIMEOUT = 30.0

# The name `Stream.events` gives a block with an id field and no data: it sets the client's
# last event ID and dispatches no event (HTML Standard, "dispatch the event").
ID_ONLY = "(id only)"


class StreamError(Exception):
    """The stream did not open: a non-200 answer (status) or no answer (status 0).

    `kind`, for no answer: the name of the error met (ConnectionRefusedError, ...).
    """

    def __init__(self, status: int, reason: str, kind: str = "") -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.kind = kind


@dataclass
class Stream:
    """One open SSE connection."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    chunked: bool
    buffer: bytes = b""

    async def _read_body(self) -> bytes:
        if not self.chunked:
            data = await self.reader.read(65536)
            if not data:
                raise EOFError
            return data
        size_line = await self.reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0], 16)
        if size == 0:
            raise EOFError
        data = await self.reader.readexactly(size)
        await self.reader.readexactly(2)
        return data

    async def events(self) -> Any:
        """Yield (id or None, event name, arrival time, chunk) for each event.

        Comments are skipped; a block with an id and no data is named ID_ONLY. `chunk` counts
        the body chunks after the opening one (one per write of the server: a replay is all
        in chunk 1).
        """
        chunk = 0
        while True:
            data = await self._read_body()
            chunk += 1
            arrived = time.time()
            self.buffer += data
            while b"\n\n" in self.buffer:
                block, self.buffer = self.buffer.split(b"\n\n", 1)
                event_id = None
                name = None
                has_data = False
                for line in block.split(b"\n"):
                    if line.startswith(b"id:"):
                        event_id = int(line[3:].strip())
                    elif line.startswith(b"event:"):
                        name = line[6:].strip().decode()
                    elif line.startswith(b"retry:"):
                        name = "retry"
                    elif line.startswith(b"data:"):
                        has_data = True
                if event_id is not None and not has_data and name is None:
                    name = ID_ONLY
                if name is not None or event_id is not None:
                    yield event_id, name, arrived, chunk

    def close(self) -> None:
        # Abort: a client that goes away, without a polite close handshake.
        self.writer.transport.abort()


async def _connect(
    port: int, receive_buffer: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    if not receive_buffer:
        return await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        # Before connecting, so that the window the server sees stays small.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    except BaseException:
        sock.close()
        raise
    return await asyncio.open_connection(sock=sock, limit=1 << 20)


async def open_stream(
    port: int,
    path: str,
    session_key: str,
    last_event_id: int | None = None,
    receive_buffer: int = 0,
) -> Stream:
    """Connect, send the GET, read the head and the stream's opening `retry:` field."""
    async with asyncio.timeout(OPEN_TIMEOUT):
        try:
            reader, writer = await _connect(port, receive_buffer)
        except OSError as exc:
            raise StreamError(0, f"connect: {exc}", type(exc).__name__) from exc
        try:
            head = [
                f"GET {path} HTTP/1.1",
                f"Host: 127.0.0.1:{port}",
                f"Cookie: sessionid={session_key}",
                "Accept: text/event-stream",
            ]
            if last_event_id is not None:
                head.append(f"Last-Event-ID: {last_event_id}")
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
            raw = await reader.readuntil(b"\r\n\r\n")
            lines = raw.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            headers = {}
            for line in lines[1:]:
                key, _, value = line.partition(":")
                headers[key.strip().lower()] = value.strip()
            if status != 200:
                writer.transport.abort()
                raise StreamError(status, lines[0])
            stream = Stream(
                reader, writer, "chunked" in headers.get("transfer-encoding", "").lower()
            )
            # The opening retry field: the stream is live.
            while not stream.buffer.startswith(b"retry:"):
                stream.buffer += await stream._read_body()
            return stream
        except (OSError, EOFError, ValueError, IndexError, asyncio.IncompleteReadError) as exc:
            writer.transport.abort()
            raise StreamError(0, f"{type(exc).__name__}: {exc}", type(exc).__name__) from exc
        except BaseException:
            writer.transport.abort()
            raise


# The client process.


@dataclass
class Held:
    """A stream the worker holds open, and what it received."""

    sid: int
    stream: Stream
    task: asyncio.Task[None] | None = None
    ended: bool = False


@dataclass
class Connection_:
    """One connection of a churning client, for the verdict."""

    client: int
    number: int
    server: int
    cursor: int | None
    requested: float
    opened: float | None = None
    status: int = 0
    closed: float | None = None


@dataclass
class Worker:
    pipe: Connection
    held: dict[int, Held] = field(default_factory=dict)
    # (sid or client, connection number, event id, arrival, chunk)
    events: list[tuple[int, int, int, float, int]] = field(default_factory=list)
    connections: list[Connection_] = field(default_factory=list)
    last_event: float = 0.0
    cursors: dict[int, int] = field(default_factory=dict)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            message = await loop.run_in_executor(None, self.pipe.recv)
            command, args = message[0], message[1:]
            handler: Callable[..., Any] = getattr(self, f"do_{command}")
            try:
                reply = await handler(*args)
            except Exception as exc:  # reported to the parent, which decides
                reply = {"error": f"{type(exc).__name__}: {exc}"}
            self.pipe.send(reply)
            if command == "stop":
                return

    # Fixed streams (the measurement run).

    async def _read(self, held: Held, number: int = 0) -> None:
        try:
            async for event_id, name, arrived, chunk in held.stream.events():
                if event_id is not None and name != ID_ONLY:
                    self.events.append((held.sid, number, event_id, arrived, chunk))
                    self.last_event = arrived
        except (OSError, EOFError, ValueError, asyncio.IncompleteReadError):
            pass
        finally:
            held.ended = True

    async def do_open(
        self, port: int, path: str, streams: Sequence[tuple[int, str]], concurrency: int
    ) -> dict[str, Any]:
        started = time.monotonic()
        failed: Counter[str] = Counter()
        limit = asyncio.Semaphore(concurrency)

        async def one(sid: int, key: str) -> None:
            async with limit:
                try:
                    stream = await open_stream(port, path, key)
                except StreamError as exc:
                    failed[str(exc.status)] += 1
                    return
                except TimeoutError:
                    failed["timeout"] += 1
                    return
            held = Held(sid, stream)
            held.task = asyncio.create_task(self._read(held))
            self.held[sid] = held

        await asyncio.gather(*(one(sid, key) for sid, key in streams))
        return {
            "opened": sorted(sid for sid, _ in streams if sid in self.held),
            "failed": dict(failed),
            "seconds": time.monotonic() - started,
        }

    async def do_stall(self, port: int, path: str, sid: int, key: str) -> dict[str, Any]:
        """Open a stream that is never read: a client that stops reading."""
        try:
            stream = await open_stream(port, path, key, receive_buffer=4096)
        except (StreamError, TimeoutError) as exc:
            return {"opened": False, "reason": str(exc)}
        self.held[sid] = Held(sid, stream)
        return {"opened": True}

    async def do_collect(self) -> dict[str, Any]:
        events, self.events = self.events, []
        return {
            "events": events,
            "alive": sum(1 for h in self.held.values() if not h.ended),
            "ended": sum(1 for h in self.held.values() if h.ended),
            "last_event": self.last_event,
        }

    async def do_close(self, sids: Sequence[int] | None = None) -> dict[str, Any]:
        """Close these streams (all without `sids`)."""
        closing = [h for sid, h in self.held.items() if sids is None or sid in set(sids)]
        for held in closing:
            held.stream.close()
            if held.task is not None:
                held.task.cancel()
            del self.held[held.sid]
        tasks = [h.task for h in closing if h.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=10)
        return {"closed": len(closing)}

    async def do_stop(self) -> dict[str, Any]:
        await self.do_close()
        return {"stopped": True}

    # Churning clients (the several-process run).

    async def _session(
        self,
        client: int,
        number: int,
        server: int,
        port: int,
        key: str,
        cursor: int | None,
        until: Callable[[], bool],
        on_open: Callable[[], None] = lambda: None,
    ) -> int | None:
        """Open one connection, read until `until()` says stop; return the newest id seen."""
        conn = Connection_(client, number, server, cursor, time.time())
        self.connections.append(conn)
        try:
            stream = await open_stream(port, "/notifications/stream/", key, cursor)
        except StreamError as exc:
            conn.status = exc.status
            return cursor
        except TimeoutError:
            return cursor
        finally:
            on_open()
        conn.status = 200
        conn.opened = time.time()
        newest = cursor

        async def read() -> None:
            nonlocal newest
            async for event_id, name, arrived, chunk in stream.events():
                if event_id is not None and name != ID_ONLY:
                    self.events.append((client, number, event_id, arrived, chunk))
                    self.last_event = arrived
                    newest = event_id if newest is None else max(newest, event_id)

        reader = asyncio.create_task(read())
        try:
            # A condition on the clock and on other streams, checked every 50 ms.
            while not until() and not reader.done():  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        finally:
            stream.close()
            reader.cancel()
            with contextlib.suppress(
                asyncio.CancelledError, OSError, EOFError, ValueError, asyncio.IncompleteReadError
            ):
                await reader
            conn.closed = time.time()
        return newest

    async def do_churn(
        self,
        ports: Sequence[int],
        clients: Sequence[tuple[int, str, int]],
        duration: float,
        stay: tuple[float, float],
        pause: float,
        seed: int,
    ) -> dict[str, Any]:
        """Connect and disconnect each client at random for `duration` seconds.

        Each connection goes to a random server with `Last-Event-ID` set to the newest id the
        client has received.
        """
        end = time.monotonic() + duration
        rng = random.Random(seed)

        async def client_loop(client: int, key: str, cursor: int) -> None:
            number = 0
            while time.monotonic() < end:
                server = rng.randrange(len(ports))
                leave = min(end, time.monotonic() + rng.uniform(*stay))
                newest = await self._session(
                    client,
                    number,
                    server,
                    ports[server],
                    key,
                    cursor,
                    lambda leave=leave: time.monotonic() >= leave,  # type: ignore[misc]
                )
                cursor = newest if newest is not None else cursor
                number += 1
                await asyncio.sleep(rng.uniform(0, pause))
            self.cursors[client] = cursor

        await asyncio.gather(*(client_loop(c, k, cur) for c, k, cur in clients))
        return {"connections": len(self.connections)}

    async def do_settle(
        self,
        ports: Sequence[int],
        clients: Sequence[tuple[int, str, int]],
        quiet: float,
        limit: float,
        seed: int,
    ) -> dict[str, Any]:
        """Reconnect every client once from its cursor; stay until `quiet` s without events."""
        rng = random.Random(seed)
        deadline = time.monotonic() + limit
        attempted = 0
        self.last_event = time.time()

        def opened() -> None:
            nonlocal attempted
            attempted += 1
            if attempted == len(clients):
                # Quiet is counted from the moment every client is back.
                self.last_event = max(self.last_event, time.time())

        def done() -> bool:
            return time.monotonic() >= deadline or (
                attempted == len(clients) and time.time() - self.last_event >= quiet
            )

        number = 1_000_000  # settle connections, numbered apart from the churn's
        await asyncio.gather(
            *(
                self._session(
                    client,
                    number,
                    server,
                    ports[server],
                    key,
                    self.cursors.get(client, cursor),
                    done,
                    opened,
                )
                for client, key, cursor in clients
                for server in [rng.randrange(len(ports))]
            )
        )
        return {"timed_out": time.monotonic() >= deadline}

    async def do_churn_results(self) -> dict[str, Any]:
        events, self.events = self.events, []
        return {"events": events, "connections": [c.__dict__ for c in self.connections]}


def _worker_main(pipe: Connection) -> None:
    asyncio.run(Worker(pipe).run())


class ClientPool:
    """Client processes, each with its share of the streams; stopped on exit, whatever happens.

    `target` runs in each: a module-level function that serves a Worker (or a subclass) on
    the pipe it is given.
    """

    def __init__(self, processes: int, target: Callable[[Connection], None] = _worker_main) -> None:
        context = multiprocessing.get_context("spawn")
        self.pipes: list[Connection] = []
        self.processes: list[multiprocessing.process.BaseProcess] = []
        for _ in range(processes):
            parent, child = context.Pipe()
            process = context.Process(target=target, args=(child,), daemon=True)
            process.start()
            child.close()
            self.pipes.append(parent)
            self.processes.append(process)

    def __enter__(self) -> ClientPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def send_all(self, messages: Sequence[tuple[Any, ...]]) -> None:
        for pipe, message in zip(self.pipes, messages, strict=True):
            pipe.send(message)

    def receive_all(self, timeout: float) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        replies = []
        for pipe in self.pipes:
            if not pipe.poll(max(0.0, deadline - time.monotonic())):
                raise TimeoutError(f"a client process did not answer within {timeout:.0f} s")
            reply = pipe.recv()
            if "error" in reply:
                raise RuntimeError(f"client process failed: {reply['error']}")
            replies.append(reply)
        return replies

    def call(self, messages: Sequence[tuple[Any, ...]], timeout: float) -> list[dict[str, Any]]:
        self.send_all(messages)
        return self.receive_all(timeout)

    def call_one(self, index: int, message: tuple[Any, ...], timeout: float) -> dict[str, Any]:
        pipe = self.pipes[index]
        pipe.send(message)
        if not pipe.poll(timeout):
            raise TimeoutError(f"a client process did not answer within {timeout:.0f} s")
        reply: dict[str, Any] = pipe.recv()
        if "error" in reply:
            raise RuntimeError(f"client process failed: {reply['error']}")
        return reply

    def broadcast(self, message: tuple[Any, ...], timeout: float) -> list[dict[str, Any]]:
        return self.call([message] * len(self.pipes), timeout)

    def stop(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(OSError, ValueError):
                pipe.send(("stop",))
        deadline = time.monotonic() + 10
        for process in self.processes:
            process.join(max(0.1, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join(5)
        for pipe in self.pipes:
            pipe.close()
        self.pipes.clear()
        self.processes.clear()


def split(items: Sequence[Any], parts: int) -> list[list[Any]]:
    """Deal `items` round-robin into `parts` lists."""
    return [list(items[i::parts]) for i in range(parts)]
