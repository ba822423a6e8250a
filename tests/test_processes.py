"""Several daphne processes on one database, read by real SSE clients: every stream of a user
gets each of its notifications once, in id order, whatever the commit order; PgBouncer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import AbstractUser

from notifications.models import Notification

from .support import (
    DaphneServer,
    OpenTransaction,
    PgBouncer,
    StreamReader,
    database_url,
    server_env,
    session_for,
    start_daphne,
    wait_until,
)

pytestmark = pytest.mark.django_db(transaction=True)

LISTEN_WARNING = "LISTEN does not receive notifications through this connection"


async def create(user: AbstractUser, text: str) -> int:
    return (await Notification.objects.acreate(user=user, text=text)).pk


@asynccontextmanager
async def http_client(server: DaphneServer, session: str = "") -> AsyncIterator[httpx.AsyncClient]:
    cookies = {"sessionid": session} if session else {}
    async with httpx.AsyncClient(
        base_url=server.url, cookies=cookies, timeout=httpx.Timeout(10, read=60)
    ) as http:
        yield http


async def metrics(server: DaphneServer) -> dict[str, Any]:
    async with http_client(server) as http:
        answer = await http.get("/metrics", params={"format": "json"})
    assert answer.status_code == 200, answer.text
    data = answer.json()
    assert isinstance(data, dict)
    return data


async def received_ids(stream: StreamReader, count: int, timeout: float = 10) -> list[int]:
    return [int((await stream.next(timeout)).id) for _ in range(count)]


@pytest.fixture
def two_servers(tmp_path: Path, django_db_setup: None) -> Iterator[tuple[DaphneServer, ...]]:
    with (
        start_daphne(server_env(""), tmp_path / "one.log") as one,
        start_daphne(server_env(""), tmp_path / "two.log") as two,
    ):
        yield one, two


async def test_every_stream_of_a_user_on_two_processes_gets_each_notification_once_in_order(
    two_servers: tuple[DaphneServer, DaphneServer], alice: AbstractUser, bob: AbstractUser
) -> None:
    alice_key, bob_key = [await sync_to_async(session_for)(u) for u in (alice, bob)]
    async with AsyncExitStack() as stack:
        streams = []
        for server in two_servers:
            http = await stack.enter_async_context(http_client(server, alice_key))
            streams.append(await stack.enter_async_context(StreamReader(http)))
        bob_http = await stack.enter_async_context(http_client(two_servers[0], bob_key))
        bob_stream = await stack.enter_async_context(StreamReader(bob_http))

        # From this process, a third one: one row at a time, as a site's code sends them.
        sent = [await create(alice, f"n{i}") for i in range(20)]

        for stream in streams:
            assert await received_ids(stream, len(sent), timeout=15) == sent
        marker = await create(alice, "marker")
        for stream in streams:
            # Nothing more of the 20 (no second copy) before the next row.
            assert await received_ids(stream, 1) == [marker]
        bob_marker = await create(bob, "bob's own")
        assert await received_ids(bob_stream, 1) == [bob_marker]

    dispatched = await sync_to_async(
        lambda: Notification.objects.filter(pk__in=sent, dispatched=True).count()
    )()
    assert dispatched == len(sent)
    # Each row set dispatched once, by one of the two: 21 of alice's and bob's one.
    assert sum([(await metrics(server))["claimed"] for server in two_servers]) == 22


@pytest.mark.postgresql
async def test_a_row_committed_after_a_higher_id_is_delivered_live_and_replayed_in_id_order(
    daphne_server: DaphneServer, alice: AbstractUser
) -> None:
    key = await sync_to_async(session_for)(alice)
    async with AsyncExitStack() as stack:
        http = await stack.enter_async_context(http_client(daphne_server, key))
        stream = await stack.enter_async_context(StreamReader(http))
        before = await create(alice, "before")
        assert await received_ids(stream, 1) == [before]

        async with OpenTransaction(alice, "committed late") as late:
            read = await metrics_value(daphne_server, "rows_read")
            early = await create(alice, "committed early")
            assert late.pk < early
            await wait_until_async(
                lambda: _above(metrics_value(daphne_server, "rows_read"), read),
                what="the server to read the row committed early",
            )
            # A client resuming while the hole is open must not be replayed past it.
            resumed = await stack.enter_async_context(
                StreamReader(http, headers={"Last-Event-ID": str(before)})
            )
            await late.commit()

        assert await received_ids(stream, 2) == [late.pk, early]
        assert await received_ids(resumed, 2) == [late.pk, early]
        marker = await create(alice, "marker")
        assert await received_ids(stream, 1) == [marker]
        assert await received_ids(resumed, 1) == [marker]

    async with http_client(daphne_server, key) as http:
        async with StreamReader(http, headers={"Last-Event-ID": str(before)}) as from_before:
            assert await received_ids(from_before, 3) == [late.pk, early, marker]
        async with StreamReader(http, headers={"Last-Event-ID": str(early)}) as from_early:
            after = await create(alice, "after")
            assert await received_ids(from_early, 2) == [marker, after]


async def metrics_value(server: DaphneServer, key: str) -> Any:
    return (await metrics(server))[key]


async def wait_until_async(
    predicate: Any, timeout: float = 10, what: str = "", interval: float = 0.02
) -> Any:
    """Await `predicate()` until it returns something truthy; fail after `timeout` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        await asyncio.sleep(interval)


@pytest.fixture
def pooled_server(
    pgbouncer: PgBouncer, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[DaphneServer]:
    """A server whose DATABASE_URL goes through PgBouncer in transaction pooling mode."""
    settings: dict[str, str] = dict(request.param)
    if settings.pop("listen_directly", ""):
        settings["NOTIFICATIONS_LISTEN_DATABASE_URL"] = database_url()
    env = server_env("", **settings)
    env["DATABASE_URL"] = pgbouncer.database_url()
    with start_daphne(env, tmp_path / "pooled.log") as server:
        yield server


@pytest.mark.postgresql
@pytest.mark.parametrize(
    "pooled_server",
    # An interval far above the wait below: what arrives sooner was woken up.
    [{"NOTIFICATIONS_POLL_INTERVAL": "30", "listen_directly": "yes"}],
    indirect=True,
)
async def test_behind_pgbouncer_a_direct_listen_connection_wakes_the_poll(
    pooled_server: DaphneServer, alice: AbstractUser
) -> None:
    key = await sync_to_async(session_for)(alice)
    async with http_client(pooled_server, key) as http, StreamReader(http) as stream:
        await wait_until_async(
            lambda: metrics_value(pooled_server, "listening"), what="the LISTEN connection"
        )
        sent = await create(alice, "from another process")
        assert await received_ids(stream, 1, timeout=5) == [sent]
    assert LISTEN_WARNING not in pooled_server.log.read_text()


@pytest.mark.postgresql
@pytest.mark.parametrize("pooled_server", [{"NOTIFICATIONS_POLL_INTERVAL": "0.5"}], indirect=True)
async def test_behind_pgbouncer_without_a_listen_url_one_warning_and_the_poll_delivers(
    pooled_server: DaphneServer, alice: AbstractUser
) -> None:
    key = await sync_to_async(session_for)(alice)
    log = pooled_server.log
    async with http_client(pooled_server, key) as http:
        async with StreamReader(http) as stream:
            await wait_until(
                lambda: LISTEN_WARNING in log.read_text(), timeout=30, what="the warning"
            )
            sent = await create(alice, "polled")
            assert await received_ids(stream, 1) == [sent]
            assert not await metrics_value(pooled_server, "listening")
        # The poll stops with the last stream and starts again with the next: no new probe.
        await wait_until_async(
            lambda: _not(metrics_value(pooled_server, "polling")), what="the poll to stop"
        )
        async with StreamReader(http) as again:
            sent = await create(alice, "polled again")
            assert await received_ids(again, 1) == [sent]
    warnings = [line for line in log.read_text().splitlines() if LISTEN_WARNING in line]
    assert len(warnings) == 1, warnings
    assert "NOTIFICATIONS_LISTEN_DATABASE_URL" in warnings[0]


async def _not(value: Any) -> bool:
    return not await value


async def _above(value: Any, threshold: int) -> bool:
    return bool(await value > threshold)
