"""The floor under a broadcast: what one event to every open stream costs without the hub.

`bin/bench floor` opens --streams streams (10,000) on --processes daphne processes (1)
and, --rounds times, fires one event at all of them at once; it reports, as `broadcast`
does, the first, median and last arrival after the fire, and the CPU time the servers and
the client processes spent in the round. Two stream endpoints, run one after the other on
fresh processes (--variant):

- `raw`: a bare ASGI application, no Django: the response start, then one body message per
  event. What daphne and Twisted cost per event, with one task per stream as any ASGI
  application that streams has.
- `django`: a Django async view returning a StreamingHttpResponse over an async generator,
  through the site's middleware: the `raw` path plus Django's streaming response.

Both wait on one asyncio.Event per round and send an event the size of a notification's
(`event()`); no database is touched after start. The difference between these and `broadcast`
is what the hub and the stream's encoding add.

The fire is a request to each process (`/bench/floor/fire`, all at once from threads): the
time runs from just before the first is sent, so it includes the request's own trip, where
`broadcast`'s runs from the moment COMMIT returned.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import math
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.http import HttpRequest, StreamingHttpResponse

from . import server as servers
from .client import ClientPool, split
from .database import Database
from .run import log, percentiles

RAW_PATH = "/bench/floor/raw/"
DJANGO_PATH = "/bench/floor/django/"
FIRE_PATH = "/bench/floor/fire"

# The size of a notification's event: id, event name, a JSON object of six fields.
_DATA = (
    "event: notification\ndata: "
    + json.dumps(
        {
            "id": 0,
            "text": "The quarterly report is ready for review by everyone on the team",
            "created": "2026-12-02T18:00:00.000000+00:00",
            "read": False,
            "url": None,
            "level": "info",
        }
    )
    + "\n\n"
)


def event(number: int) -> bytes:
    return f"id: {number}\n{_DATA}".encode()


class _Rounds:
    """The process's rounds: each fire sets the round's event and starts the next."""

    def __init__(self) -> None:
        self.number = 0
        self._fired: asyncio.Event | None = None

    async def next(self, after: int) -> int:
        """Wait for a round after `after`; return its number."""
        while self.number <= after:
            if self._fired is None:
                self._fired = asyncio.Event()
            await self._fired.wait()
        return self.number

    def fire(self) -> int:
        self.number += 1
        fired, self._fired = self._fired, None
        if fired is not None:
            fired.set()
        return self.number


_rounds = _Rounds()

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


async def _raw_stream(receive: Receive, send: Send) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")],
        }
    )
    await send({"type": "http.response.body", "body": b"retry: 1000\n\n", "more_body": True})

    async def events() -> None:
        number = _rounds.number
        while True:
            number = await _rounds.next(number)
            body = event(number)
            await send({"type": "http.response.body", "body": body, "more_body": True})

    sending = asyncio.ensure_future(events())
    try:
        while (await receive())["type"] != "http.disconnect":
            pass
    finally:
        sending.cancel()
        with contextlib.suppress(asyncio.CancelledError, OSError):
            await sending


async def _fire(send: Send) -> None:
    # The streams' objects out of the collector's reach, as the hub keeps them
    # (notifications/hub/gcfreeze.py): a full collection of 10,000 streams' objects during a
    # round is a pause of seconds here, which is no cost of writing the events.
    gc.freeze()
    number = _rounds.fire()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(number).encode()})


def wrap(django_application: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """The bench's ASGI application: the floor's two raw paths, the rest to Django."""

    async def application(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == RAW_PATH:
            await _raw_stream(receive, send)
        elif scope["type"] == "http" and scope["path"] == FIRE_PATH:
            await _fire(send)
        else:
            await django_application(scope, receive, send)

    return application


async def django_stream(request: HttpRequest) -> StreamingHttpResponse:
    """The same stream as a Django view: what Django's streaming response adds to `raw`."""

    async def events() -> AsyncIterator[bytes]:
        yield b"retry: 1000\n\n"
        number = _rounds.number
        while True:
            number = await _rounds.next(number)
            yield event(number)

    response = StreamingHttpResponse(events(), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    return response


@dataclass
class Options:
    streams: int
    processes: int
    rounds: int
    variants: list[str]
    concurrency: int
    clients_per_process: int
    settle: float
    deliver_timeout: float
    backlog: int


def floor(database: Database, opts: Options, logs: Path) -> dict[str, Any]:
    """Run each variant on a fresh daphne process; return its rounds' arrivals."""
    result: dict[str, Any] = {"options": opts.__dict__, "variants": {}}
    for variant in opts.variants:
        path = RAW_PATH if variant == "raw" else DJANGO_PATH
        log(f"floor {variant}: {opts.streams} streams on {opts.processes} process(es)")
        with contextlib.ExitStack() as stack:
            daphnes = [
                stack.enter_context(
                    servers.serve(
                        database,
                        f"bench-floor-{variant}-{i}",
                        logs / f"daphne-floor-{variant}-{i}.log",
                        backlog=opts.backlog or None,
                        application="bench.asgi:application",
                    )
                )
                for i in range(opts.processes)
            ]
            ports = [server.port for server in daphnes]
            workers = max(1, math.ceil(opts.streams / opts.clients_per_process))
            pool = stack.enter_context(ClientPool(workers))
            per_worker = max(1, opts.concurrency // workers)
            started = time.monotonic()
            replies = []
            for index, port in enumerate(ports):
                mine = [(sid, "none") for sid in range(index, opts.streams, len(ports))]
                replies += pool.call(
                    [("open", port, path, share, per_worker) for share in split(mine, workers)],
                    timeout=120 + len(mine) / 20,
                )
            opened = sum(len(r["opened"]) for r in replies)
            log(f"{opened}/{opts.streams} streams open in {time.monotonic() - started:.1f} s")
            time.sleep(opts.settle)
            pool.broadcast(("collect",), timeout=60)
            rounds = []
            cpu = servers.RoundCpu(daphnes, pool)
            for _ in range(opts.rounds):
                rounds.append(_round(pool, ports, opened, opts.deliver_timeout, cpu))
                one = rounds[-1]
                log(
                    f"floor {variant}: {one['arrived']}/{one['expected']} arrived; after the "
                    f"fire: first {one['first_ms']}, p50 {one['p50_ms']}, "
                    f"last {one['last_ms']} ms; CPU s: servers {one['server_cpu_s']}, "
                    f"clients {one['client_cpu_s']}"
                )
                time.sleep(opts.settle)
        lasts = sorted(r["last_ms"] for r in rounds if r["last_ms"] is not None)
        result["variants"][variant] = {
            "opened": opened,
            "rounds": rounds,
            "last_ms_median": lasts[len(lasts) // 2] if lasts else None,
            "missing": sum(r["expected"] - r["arrived"] for r in rounds),
        }
    result["verdict"] = {
        variant: {k: v for k, v in one.items() if k != "rounds"}
        for variant, one in result["variants"].items()
    }
    result["verdict"]["ok"] = all(
        v["missing"] == 0 and v["opened"] == opts.streams for v in result["variants"].values()
    )
    return result


def _round(
    pool: ClientPool,
    ports: list[int],
    streams: int,
    timeout: float,
    cpu: servers.RoundCpu,
) -> dict[str, Any]:
    def fire(port: int) -> int:
        url = f"http://127.0.0.1:{port}{FIRE_PATH}"
        with urllib.request.urlopen(url, timeout=30) as answer:  # noqa: S310 - our server
            return int(answer.read())

    cpu.start()
    with ThreadPoolExecutor(len(ports)) as threads:
        fired = time.time()
        numbers = set(threads.map(fire, ports))
    # Every process counts its rounds alike: one number for all.
    (number,) = numbers
    arrivals: dict[int, float] = {}
    deadline = time.monotonic() + timeout
    while len(arrivals) < streams and time.monotonic() < deadline:
        for reply in pool.broadcast(("collect",), timeout=60):
            for sid, _number, event_id, arrived, _chunk in reply["events"]:
                if event_id == number:
                    arrivals.setdefault(sid, arrived)
        if len(arrivals) < streams:
            time.sleep(0.25)
    spent = cpu.spent()
    after = sorted(arrived - fired for arrived in arrivals.values())
    one: dict[str, Any] = {
        "expected": streams,
        "arrived": len(after),
        "first_ms": round(after[0] * 1000, 1) if after else None,
        **percentiles(after),
    }
    one["last_ms"] = one.pop("max_ms")
    # From the fire until every event was collected (the last collection up to 0.25 s after
    # the last arrival): each server's CPU seconds, and the client processes' together.
    one.update(spent)
    return one
