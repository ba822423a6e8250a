"""A real daphne server on 127.0.0.1, read by a real SSE client (httpx-sse)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from pathlib import Path

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import AbstractUser
from httpx_sse import ServerSentEvent

from notifications.models import Notification

from .support import (
    SERVER_APPLICATION_NAME,
    DaphneServer,
    StreamReader,
    server_env,
    session_for,
    start_daphne,
    wait_until,
)

pytestmark = pytest.mark.django_db(transaction=True)

Client = Callable[[str], AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def client(daphne_server: DaphneServer) -> Client:
    @asynccontextmanager
    async def open_client(session: str) -> AsyncIterator[httpx.AsyncClient]:
        async with httpx.AsyncClient(
            base_url=daphne_server.url,
            cookies={"sessionid": session},
            timeout=httpx.Timeout(10, read=60),
        ) as http:
            yield http

    return open_client


async def create(user: AbstractUser, text: str) -> Notification:
    return await Notification.objects.acreate(user=user, text=text)


def payload(event: ServerSentEvent) -> dict[str, object]:
    data = json.loads(event.data)
    assert isinstance(data, dict)
    assert event.id == str(data["id"])
    return data


async def csrf_token(http: httpx.AsyncClient, path: str) -> str:
    page = await http.get(path)
    assert page.status_code == 200, page.text[:500]
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert match, "no CSRF token in the form"
    return match.group(1)


async def test_admin_add_form_reaches_alices_stream_and_not_bobs(
    client: Client, alice: AbstractUser, bob: AbstractUser, staff: AbstractUser
) -> None:
    keys = [await sync_to_async(session_for)(u) for u in (alice, bob, staff)]
    async with (
        client(keys[0]) as alice_http,
        client(keys[1]) as bob_http,
        client(keys[2]) as admin_http,
        StreamReader(alice_http) as alice_stream,
        StreamReader(bob_http) as bob_stream,
    ):
        assert alice_stream.status == bob_stream.status == 200
        add = "/admin/notifications/notification/add/"
        token = await csrf_token(admin_http, add)

        saved = await admin_http.post(
            add,
            data={
                "csrfmiddlewaretoken": token,
                "user": str(alice.pk),
                "text": "Deploy finished <b>green</b>",
                "_save": "Save",
            },
        )

        assert saved.status_code == 302, saved.text[:2000]
        got = payload(await alice_stream.next())
        assert got["text"] == "Deploy finished <b>green</b>"
        # Bob's next event is his own marker: alice's notification never reached him.
        marker = await create(bob, "bob's marker")
        assert payload(await bob_stream.next())["id"] == marker.pk


async def test_two_streams_of_one_user_both_get_each_notification_once(
    client: Client, alice: AbstractUser
) -> None:
    key = await sync_to_async(session_for)(alice)
    async with client(key) as http, StreamReader(http) as first, StreamReader(http) as second:
        one = await create(alice, "one")
        assert payload(await first.next())["id"] == one.pk
        assert payload(await second.next())["id"] == one.pk

        two = await create(alice, "two")
        assert payload(await first.next())["id"] == two.pk
        assert payload(await second.next())["id"] == two.pk


async def test_a_20_kb_text_with_newlines_and_markup_arrives_intact(
    client: Client, alice: AbstractUser
) -> None:
    text = ('<script>alert(1)</script>\nline\r\nmore\r\u2028 "q" \\ 漢字 🎉\n' * 500)[:20_000]
    key = await sync_to_async(session_for)(alice)
    async with client(key) as http, StreamReader(http) as stream:
        sent = await create(alice, text)
        got = payload(await stream.next())
        assert got["id"] == sent.pk
        assert got["text"] == text


async def test_logout_ends_the_stream_and_the_reconnect_gets_403(
    client: Client, alice: AbstractUser
) -> None:
    key = await sync_to_async(session_for)(alice)
    async with client(key) as http, StreamReader(http) as stream:
        token = await csrf_token(http, "/")

        logged_out = await http.post("/accounts/logout/", data={"csrfmiddlewaretoken": token})

        assert logged_out.status_code == 302
        # The contract: within 5 seconds (the server checks every second here).
        await asyncio.wait_for(stream.ended.wait(), 5)
    async with client(key) as http, StreamReader(http) as again:
        assert again.status == 403


async def test_reconnect_with_last_event_id_replays_what_was_missed(
    client: Client, alice: AbstractUser
) -> None:
    key = await sync_to_async(session_for)(alice)
    async with client(key) as http:
        async with StreamReader(http) as stream:
            seen = await create(alice, "seen")
            assert payload(await stream.next())["id"] == seen.pk
        missed = [await create(alice, f"missed {i}") for i in range(3)]
        await sync_to_async(
            lambda: Notification.objects.filter(pk__in=[m.pk for m in missed]).update(
                dispatched=True
            )
        )()
        async with StreamReader(http, headers={"Last-Event-ID": str(seen.pk)}) as resumed:
            assert [payload(await resumed.next())["id"] for _ in missed] == [m.pk for m in missed]


def is_postgresql() -> bool:
    from django.db import connection

    return connection.vendor == "postgresql"


def server_db_connections(server: DaphneServer) -> int:
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                [SERVER_APPLICATION_NAME],
            )
            return int(cursor.fetchone()[0])
    return server.open_files(connection.settings_dict["NAME"])


async def test_threads_and_database_connections_do_not_grow_with_streams(
    daphne_server: DaphneServer, client: Client, alice: AbstractUser, bob: AbstractUser
) -> None:
    keys = [await sync_to_async(session_for)(u) for u in (alice, bob)]
    async with AsyncExitStack() as stack:
        http = [await stack.enter_async_context(client(k)) for k in keys]
        first = await stack.enter_async_context(StreamReader(http[0]))
        await create(alice, "warm up")
        await first.next()
        if await sync_to_async(is_postgresql)():
            # The hub's connection, and the LISTEN one, which connects on its own time.
            for _ in range(500):  # up to 10 s
                if await sync_to_async(server_db_connections)(daphne_server) == 2:
                    break
                await asyncio.sleep(0.02)
            else:
                raise AssertionError("the hub's and the LISTEN connection did not both open")
        one = (
            daphne_server.status()["Threads"],
            await sync_to_async(server_db_connections)(daphne_server),
        )

        readers = [await stack.enter_async_context(StreamReader(http[i % 2])) for i in range(40)]
        sent = [await create(alice, "to all"), await create(bob, "to all")]
        for i, reader in enumerate(readers):
            assert payload(await reader.next())["id"] == sent[i % 2].pk
        many = (
            daphne_server.status()["Threads"],
            await sync_to_async(server_db_connections)(daphne_server),
        )

    assert many[1] == one[1], f"connections with 1 stream: {one[1]}, with 41: {many[1]}"
    # SQLite keeps the descriptor of a closed connection open while another connection of the
    # process holds a lock on the file (closing it would drop the process's POSIX locks), and
    # reuses it: a page view's closed connection may still show as a second handle.
    # PostgreSQL: the hub's connection and the LISTEN one.
    assert one[1] <= 2
    assert many[0] <= one[0] + 1, f"threads with 1 stream: {one[0]}, with 41: {many[0]}"


async def test_static_files_are_served_with_debug_off(client: Client) -> None:
    async with client("") as http:
        # Native ES modules: served as JavaScript, which browsers require of a module script.
        scripts = {
            name: await http.get(f"/static/notifications/{name}")
            for name in ("page.js", "stream.js", "leader.js", "bell.js")
        }
        bell_css = await http.get("/static/notifications/bell.css")
        admin_css = await http.get("/static/admin/css/base.css")
    for script in scripts.values():
        assert script.status_code == 200
        assert "javascript" in script.headers["content-type"]
    assert "new EventSource(" in scripts["stream.js"].text
    assert bell_css.status_code == 200
    assert admin_css.status_code == 200


async def test_logging_in_through_the_form_opens_the_page_and_its_stream(
    daphne_server: DaphneServer, transactional_db: None
) -> None:
    from .support import make_user

    def make_carol() -> int:
        carol = make_user("carol")
        carol.set_password("a long enough password")
        carol.save()
        return int(carol.pk)

    carol_pk = await sync_to_async(make_carol)()
    async with httpx.AsyncClient(base_url=daphne_server.url, timeout=10) as http:
        token = await csrf_token(http, "/accounts/login/")
        login = await http.post(
            "/accounts/login/",
            data={
                "csrfmiddlewaretoken": token,
                "username": "carol",
                "password": "a long enough password",
                "next": "/",
            },
        )
        assert login.status_code == 302
        assert login.headers["location"] == "/"
        page = await http.get("/")
        assert page.status_code == 200
        match = re.search(r'data-stream-url="([^"]+)"', page.text)
        assert match
        assert match.group(1) == f"/notifications/stream/?last_event_id=0&amp;user={carol_pk}"
        async with StreamReader(http, path=match.group(1).replace("&amp;", "&")) as stream:
            assert stream.status == 200


async def test_wrong_password_gets_a_form_error_not_a_500(daphne_server: DaphneServer) -> None:
    async with httpx.AsyncClient(base_url=daphne_server.url, timeout=10) as http:
        token = await csrf_token(http, "/accounts/login/")
        login = await http.post(
            "/accounts/login/",
            data={"csrfmiddlewaretoken": token, "username": "nobody", "password": "wrong"},
        )
    assert login.status_code == 200
    assert "Please enter a correct username and password" in login.text


async def test_one_account_at_its_stream_cap_does_not_starve_another(
    client: Client, alice: AbstractUser, bob: AbstractUser
) -> None:
    from .conftest import LIVE_MAX_STREAMS_PER_USER

    keys = [await sync_to_async(session_for)(u) for u in (alice, bob)]
    async with AsyncExitStack() as stack:
        alice_http = await stack.enter_async_context(client(keys[0]))
        bob_http = await stack.enter_async_context(client(keys[1]))
        for _ in range(LIVE_MAX_STREAMS_PER_USER):
            reader = await stack.enter_async_context(StreamReader(alice_http))
            assert reader.status == 200

        refused = await alice_http.get("/notifications/stream/")
        probe = await alice_http.head("/notifications/stream/")
        bob_stream = await stack.enter_async_context(StreamReader(bob_http))
        sent = await create(bob, "still served")

        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "10"
        assert "Too many open streams" in refused.text
        assert probe.status_code == 429
        assert bob_stream.status == 200
        assert payload(await bob_stream.next())["id"] == sent.pk


@pytest.fixture
def hourly_poll_server(daphne_server: DaphneServer, tmp_path: Path) -> Iterator[DaphneServer]:
    """A server that polls once an hour: whatever arrives sooner was woken up."""
    with start_daphne(
        server_env("", NOTIFICATIONS_POLL_INTERVAL="3600"), tmp_path / "hourly.log"
    ) as server:
        yield server


async def test_the_admin_form_and_other_processes_wake_the_poll(
    hourly_poll_server: DaphneServer, alice: AbstractUser, staff: AbstractUser
) -> None:
    """In the server's process: a save wakes its poll. From this process: PostgreSQL's
    NOTIFY, or SQLite's data_version."""
    keys = [await sync_to_async(session_for)(u) for u in (alice, staff)]
    async with AsyncExitStack() as stack:
        alice_http, admin_http = [
            await stack.enter_async_context(
                httpx.AsyncClient(
                    base_url=hourly_poll_server.url, cookies={"sessionid": k}, timeout=30
                )
            )
            for k in keys
        ]
        stream = await stack.enter_async_context(StreamReader(alice_http))
        add = "/admin/notifications/notification/add/"
        token = await csrf_token(admin_http, add)

        saved = await admin_http.post(
            add,
            data={"csrfmiddlewaretoken": token, "user": str(alice.pk), "text": "from the admin"},
        )
        assert saved.status_code == 302, saved.text[:2000]
        assert payload(await stream.next())["text"] == "from the admin"

        elsewhere = await create(alice, "from another process")
        assert payload(await stream.next())["id"] == elsewhere.pk


@pytest.fixture
def small_budget_server(daphne_server: DaphneServer, tmp_path: Path) -> Iterator[DaphneServer]:
    with start_daphne(
        server_env("", NOTIFICATIONS_STREAM_MAX_BYTES="200000"), tmp_path / "budget.log"
    ) as server:
        yield server


async def test_a_client_that_stops_reading_holds_up_nobody_and_is_cut_off(
    small_budget_server: DaphneServer, alice: AbstractUser, bob: AbstractUser
) -> None:
    import socket

    keys = [await sync_to_async(session_for)(u) for u in (alice, bob)]
    # Alice's client sends its request, then never reads a byte.
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect(("127.0.0.1", small_budget_server.port))
    try:
        stalled.sendall(
            b"GET /notifications/stream/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Cookie: sessionid=" + keys[0].encode() + b"\r\n\r\n"
        )
        async with httpx.AsyncClient(
            base_url=small_budget_server.url, cookies={"sessionid": keys[1]}, timeout=30
        ) as bob_http:
            await wait_until(
                lambda: (
                    "Stream opened: user " + str(alice.pk)
                    in small_budget_server.log.read_text(errors="replace")
                ),
                what="alice's stream to open",
            )
            async with StreamReader(bob_http) as bob_stream:
                # 50 x 20 KB for alice: far more than her socket takes, five times the budget.
                await Notification.objects.abulk_create(
                    [Notification(user=alice, text=f"{i} " + "x" * 20_000) for i in range(50)]
                )
                for_bob = await create(bob, "bob is not held up")

                assert payload(await bob_stream.next())["id"] == for_bob.pk
                await wait_until(
                    lambda: re.search(
                        rf"Stream closed: user {alice.pk}, .* byte budget spent",
                        small_budget_server.log.read_text(errors="replace"),
                    ),
                    what="alice's stream to end at its byte budget",
                )
    finally:
        stalled.close()
