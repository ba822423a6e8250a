"""Read and deleted events end to end: live daphne servers, the JSON API over HTTP, and real
SSE clients (httpx-sse, which keeps the last event ID as the HTML Standard says)."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import AbstractUser
from httpx_sse import ServerSentEvent

from notifications.models import Notification

from .support import DaphneServer, StreamReader, server_env, session_for, start_daphne

pytestmark = pytest.mark.django_db(transaction=True)

READ = "/notifications/api/read/"
CSRF = "abcdefghijklmnopqrstuvwxyzABCDEF"
ALL_EVENTS = ("notification", "read", "deleted")
# The bound: every open stream of the user gets the change within a second.
WITHIN = 1.0


@asynccontextmanager
async def http_client(server: DaphneServer, session: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=server.url,
        cookies={"sessionid": session, "csrftoken": CSRF},
        timeout=httpx.Timeout(10, read=60),
    ) as http:
        yield http


async def mark_read(http: httpx.AsyncClient, body: dict[str, Any]) -> int:
    answer = await http.post(READ, json=body, headers={"X-CSRFToken": CSRF})
    assert answer.status_code == 200, answer.text
    unread = answer.json()["unread"]
    assert isinstance(unread, int)
    return unread


async def create(user: AbstractUser, text: str) -> int:
    return (await Notification.objects.acreate(user=user, text=text)).pk


async def next_named(stream: StreamReader, name: str, timeout: float = 10) -> ServerSentEvent:
    """Return the next event, which must be called `name`."""
    event = await stream.next(timeout)
    assert event.event == name, (event.event, event.data)
    return event


def data(event: ServerSentEvent) -> dict[str, Any]:
    value = json.loads(event.data)
    assert isinstance(value, dict)
    return value


async def test_marking_read_through_the_api_reaches_the_stream_within_a_second(
    daphne_server: DaphneServer, alice: AbstractUser
) -> None:
    session = await sync_to_async(session_for)(alice)
    async with (
        http_client(daphne_server, session) as http,
        StreamReader(http, names=ALL_EVENTS) as stream,
    ):
        first, second, third = [await create(alice, t) for t in ("one", "two", "three")]
        for pk in (first, second, third):
            received = data(await next_named(stream, "notification"))
            assert (received["id"], received["read"]) == (pk, False)

        started = time.monotonic()
        assert await mark_read(http, {"ids": [first]}) == 2
        event = await next_named(stream, "read", timeout=WITHIN)
        assert time.monotonic() - started < WITHIN
        assert data(event) == {"ids": [first], "unread": 2}
        # An event without an id: the client's last event id is still the last notification's.
        assert event.id == str(third)

        assert await mark_read(http, {"all": True}) == 0
        assert data(await next_named(stream, "read", timeout=WITHIN)) == {
            "all": True,
            "newest": third,
            "unread": 0,
        }
        metrics = (await http.get("/metrics", params={"format": "json"})).json()
        assert metrics["change_events"] >= 2


async def test_a_deletion_by_another_process_reaches_the_stream_within_a_second(
    daphne_server: DaphneServer, alice: AbstractUser
) -> None:
    session = await sync_to_async(session_for)(alice)
    async with (
        http_client(daphne_server, session) as http,
        StreamReader(http, names=ALL_EVENTS) as stream,
    ):
        kept, gone = await create(alice, "kept"), await create(alice, "gone")
        for _ in (kept, gone):
            await next_named(stream, "notification")

        started = time.monotonic()
        # This test process is the other process: as the admin or a purge would.
        await Notification.objects.filter(pk=gone).adelete()
        event = await next_named(stream, "deleted", timeout=WITHIN)
        assert time.monotonic() - started < WITHIN
        assert data(event) == {"ids": [gone], "unread": 1}


async def test_a_resume_after_a_read_event_replays_from_the_last_notification(
    daphne_server: DaphneServer, alice: AbstractUser
) -> None:
    session = await sync_to_async(session_for)(alice)
    async with http_client(daphne_server, session) as http:
        async with StreamReader(http, names=ALL_EVENTS) as stream:
            seen = await create(alice, "seen")
            await next_named(stream, "notification")
            await mark_read(http, {"ids": [seen]})
            last = await next_named(stream, "read")
        # What a browser sends on its reconnect: the last event ID, which the read event kept.
        assert last.id == str(seen)
        missed = await create(alice, "missed while away")

        async with StreamReader(
            http, headers={"Last-Event-ID": last.id}, names=ALL_EVENTS
        ) as resumed:
            replayed = await next_named(resumed, "notification")
            assert data(replayed)["id"] == missed
            assert data(replayed)["read"] is False
            newer = await create(alice, "newer")
            assert data(await next_named(resumed, "notification"))["id"] == newer


@pytest.fixture
def two_servers(tmp_path: Path, django_db_setup: None) -> Iterator[tuple[DaphneServer, ...]]:
    with (
        start_daphne(server_env(""), tmp_path / "one.log") as one,
        start_daphne(server_env(""), tmp_path / "two.log") as two,
    ):
        yield one, two


@pytest.mark.postgresql
async def test_a_read_through_one_process_reaches_streams_on_both_within_a_second(
    two_servers: tuple[DaphneServer, DaphneServer],
    alice: AbstractUser,
    capsys: pytest.CaptureFixture[str],
) -> None:
    session = await sync_to_async(session_for)(alice)
    rounds = 10
    latencies: dict[str, list[float]] = {"same process": [], "other process": []}
    async with AsyncExitStack() as stack:
        https = [await stack.enter_async_context(http_client(s, session)) for s in two_servers]
        streams = [
            await stack.enter_async_context(StreamReader(http, names=ALL_EVENTS)) for http in https
        ]
        ids = [await create(alice, f"n{i}") for i in range(rounds)]
        for stream in streams:
            for pk in ids:
                assert data(await next_named(stream, "notification"))["id"] == pk

        for i, pk in enumerate(ids):
            started = time.monotonic()
            await mark_read(https[0], {"ids": [pk]})
            for name, stream in zip(("same process", "other process"), streams, strict=True):
                event = await next_named(stream, "read", timeout=WITHIN)
                latencies[name].append(time.monotonic() - started)
                assert data(event) == {"ids": [pk], "unread": rounds - i - 1}

        # Deleting through either process's admin or a purge: here, from a third process.
        started = time.monotonic()
        await Notification.objects.filter(pk=ids[0]).adelete()
        for stream in streams:
            event = await next_named(stream, "deleted", timeout=WITHIN)
            assert data(event) == {"ids": [ids[0]], "unread": 0}
            assert time.monotonic() - started < WITHIN

    for values in latencies.values():
        assert max(values) < WITHIN
    with capsys.disabled():
        for name, values in latencies.items():
            print(
                f"\nread event, API on process one -> stream on the {name}: "
                f"median {statistics.median(values) * 1000:.0f} ms, "
                f"max {max(values) * 1000:.0f} ms ({len(values)} marks, from the POST)"
            )
