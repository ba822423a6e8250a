"""The views through the ASGI application (Django's handler, middleware and all)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from asgiref.testing import ApplicationCommunicator
from django.contrib.auth.models import AbstractUser
from django.test import Client

from notifications.hub import Hub
from notifications.models import Notification
from site_config.asgi import application

from .support import wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fast_poll")]

STREAM = "/notifications/stream/"

_open: list[Exchange] = []


@pytest.fixture(autouse=True)
async def _finish_exchanges() -> AsyncIterator[None]:
    yield
    # Every request ends with the disconnect a server would send, so Django's handler
    # closes everything it opened.
    while _open:
        await _open.pop().disconnect()


class Exchange:
    """One HTTP request to the ASGI app, read message by message."""

    def __init__(
        self,
        path: str = STREAM,
        *,
        session: str | None = None,
        headers: dict[str, str] | None = None,
        query: str = "",
        method: str = "GET",
    ) -> None:
        raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
        if session:
            raw.append((b"cookie", f"sessionid={session}".encode()))
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query.encode(),
            "headers": [(b"host", b"127.0.0.1"), *raw],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
        }
        self.app = ApplicationCommunicator(application, scope)
        _open.append(self)
        self.status = 0
        self.headers: dict[str, str] = {}

    async def start(self) -> Exchange:
        await self.app.send_input({"type": "http.request", "body": b""})
        start = await self.app.receive_output(10)
        assert start["type"] == "http.response.start"
        self.status = start["status"]
        self.headers = {k.decode().lower(): v.decode() for k, v in start["headers"]}
        return self

    async def body(self, timeout: float = 10) -> str:
        message: dict[str, Any] = await self.app.receive_output(timeout)
        assert message["type"] == "http.response.body"
        return message.get("body", b"").decode()

    async def disconnect(self) -> None:
        await self.app.send_input({"type": "http.disconnect"})
        await self.app.wait(10)


async def test_anonymous_gets_403_with_a_message_not_a_redirect(hub: Hub) -> None:
    response = await Exchange().start()
    assert response.status == 403
    assert "location" not in response.headers
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert "Not signed in" in await response.body()


async def test_unknown_session_gets_403(hub: Hub) -> None:
    response = await Exchange(session="not-a-session").start()
    assert response.status == 403


async def test_other_methods_are_not_allowed(hub: Hub, alice_session: str) -> None:
    response = await Exchange(session=alice_session, method="OPTIONS").start()
    assert response.status == 405
    assert response.headers["allow"] == "GET, HEAD"


@pytest.mark.parametrize(
    ("headers", "query"),
    [
        ({"Last-Event-ID": "abc"}, ""),
        ({"Last-Event-ID": "-1"}, ""),
        ({"Last-Event-ID": "1.5"}, ""),
        ({"Last-Event-ID": "9" * 30}, ""),
        ({}, "last_event_id=x"),
        ({}, "last_event_id=99999999999999999999"),
    ],
)
async def test_malformed_cursor_gets_400_with_a_message(
    hub: Hub, alice_session: str, headers: dict[str, str], query: str
) -> None:
    response = await Exchange(session=alice_session, headers=headers, query=query).start()
    assert response.status == 400
    body = await response.body()
    assert "must be a notification id" in body
    assert len(body) < 200


async def test_stream_headers_and_first_bytes_at_once(hub: Hub, alice_session: str) -> None:
    response = await Exchange(
        session=alice_session, headers={"Accept-Encoding": "gzip, br"}
    ).start()

    assert response.status == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    assert "content-encoding" not in response.headers
    assert "connection" not in response.headers
    assert await response.body(timeout=2) == "retry: 2000\n\n"
    await response.disconnect()


async def test_last_event_id_header_replays_and_wins_over_the_query(
    hub: Hub, alice: AbstractUser, alice_session: str
) -> None:
    rows = [await Notification.objects.acreate(user=alice, text=str(i)) for i in range(3)]
    response = await Exchange(
        session=alice_session,
        headers={"Last-Event-ID": str(rows[0].pk)},
        query=f"last_event_id={rows[1].pk}",
    ).start()
    await response.body()

    replay = await response.body()

    assert [
        json.loads(line[6:])["id"] for line in replay.splitlines() if line.startswith("data:")
    ] == [
        rows[1].pk,
        rows[2].pk,
    ]
    await response.disconnect()


async def test_empty_last_event_id_header_means_no_cursor(
    hub: Hub, alice: AbstractUser, alice_session: str
) -> None:
    response = await Exchange(session=alice_session, headers={"Last-Event-ID": ""}).start()
    assert response.status == 200
    await response.disconnect()


async def test_disconnect_releases_the_stream(hub: Hub, alice_session: str) -> None:
    response = await Exchange(session=alice_session).start()
    await response.body()
    assert hub.stream_count == 1

    await response.disconnect()

    await wait_until(lambda: hub.stream_count == 0, what="the stream to be released")


async def test_a_database_outage_at_connect_gets_503(
    hub: Hub, alice_session: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django.db import OperationalError

    from notifications import sessions

    def down(keys: object) -> object:
        raise OperationalError("connection refused (simulated)")

    monkeypatch.setattr(sessions, "session_users", down)
    response = await Exchange(session=alice_session).start()
    assert response.status == 503
    assert response.headers["retry-after"] == "5"
    assert "try again" in await response.body()


def test_page_redirects_anonymous_to_login(db: None) -> None:
    response = Client().get("/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/"


def test_page_renders_history_and_streams_from_the_newest_id_of_anyone(
    alice: AbstractUser, bob: AbstractUser
) -> None:
    rows = [Notification.objects.create(user=alice, text=f"note {i}") for i in range(3)]
    Notification.objects.create(user=alice, text="<b>bold</b> & <script>x</script>")
    hostile = Notification.objects.latest("pk")
    # Every id up to the newest is settled here: the stream resumes after all of them.
    newest = Notification.objects.create(user=bob, text="for bob only")
    client = Client()
    client.force_login(alice)

    response = client.get("/")

    assert response.status_code == 200
    html = response.content.decode()
    assert f"/notifications/stream/?last_event_id={newest.pk}" in html
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; &lt;script&gt;x&lt;/script&gt;" in html
    assert "<script>x</script>" not in html
    assert "for bob only" not in html
    shown = [n.pk for n in response.context["notifications"]]
    assert shown == [hostile.pk, rows[2].pk, rows[1].pk, rows[0].pk]
    assert not Notification.objects.filter(user=alice, dispatched=False).exists()
    assert Notification.objects.filter(user=bob, dispatched=False).count() == 1


def test_page_with_no_history_streams_from_zero(alice: AbstractUser) -> None:
    client = Client()
    client.force_login(alice)
    response = client.get("/")
    assert "/notifications/stream/?last_event_id=0" in response.content.decode()


async def test_head_answers_the_status_without_opening_a_stream(
    hub: Hub, alice_session: str
) -> None:
    signed_in = await Exchange(session=alice_session, method="HEAD").start()
    assert signed_in.status == 200
    assert signed_in.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert hub.stream_count == 0
    signed_out = await Exchange(method="HEAD").start()
    assert signed_out.status == 403


async def test_a_row_a_page_render_claims_still_reaches_the_open_streams(
    hub: Hub, alice: AbstractUser, alice_session: str, settings: Any
) -> None:
    settings.NOTIFICATIONS_POLL_INTERVAL = 3600
    stream = await Exchange(session=alice_session).start()
    await stream.body()  # the retry field: subscribed, and the poll sleeps
    n = await Notification.objects.acreate(user=alice, text="rendered and streamed")

    page = await Exchange("/", session=alice_session).start()

    assert page.status == 200
    assert f"id: {n.pk}\n" in await stream.body()
    assert (await Notification.objects.aget(pk=n.pk)).dispatched


async def test_a_nul_in_the_session_cookie_gets_403_without_a_query(hub: Hub) -> None:
    exchange = Exchange()
    exchange.app.scope["headers"].append((b"cookie", b'sessionid="\\000abcdefgh"'))
    response = await exchange.start()
    assert response.status == 403
    assert hub.stats.queries == hub.stats.session_queries == 0


async def test_a_database_that_does_not_answer_gets_503_not_a_hang(
    hub: Hub, alice_session: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from notifications import sessions
    from notifications.hub import worker

    release = threading.Event()

    def stuck(keys: object) -> object:
        release.wait(10)
        return {}

    monkeypatch.setattr(worker, "DATABASE_TIMEOUT", 0.2)
    monkeypatch.setattr(sessions, "session_users", stuck)
    try:
        response = await Exchange(session=alice_session).start()
    finally:
        release.set()
    assert response.status == 503


@pytest.mark.postgresql
async def test_a_locked_table_delays_delivery_without_stalling_new_streams(
    hub: Hub,
    alice: AbstractUser,
    alice_session: str,
    bob_session: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import threading

    import psycopg
    from django.db import connection

    from notifications.hub import worker

    monkeypatch.setattr(worker, "DATABASE_TIMEOUT", 2)
    alices = await Exchange(session=alice_session).start()
    await alices.body()
    await wait_until(lambda: hub.stats.ticks >= 1, what="a first poll")

    locked, unlock = threading.Event(), threading.Event()
    params = connection.get_connection_params()

    def hold_the_lock() -> None:
        with psycopg.connect(**params) as other:
            other.execute("LOCK TABLE notifications_notification IN ACCESS EXCLUSIVE MODE")
            locked.set()
            unlock.wait(30)

    holder = threading.Thread(target=hold_the_lock)
    holder.start()
    try:
        assert locked.wait(10)
        errors = hub.stats.errors
        await wait_until(lambda: hub.stats.errors > errors, what="a poll to hit the lock")
        # The worker is not stuck behind the lock: a new stream is still let in.
        bobs = await Exchange(session=bob_session).start()
        assert bobs.status == 200
    finally:
        unlock.set()
        holder.join(10)

    n = await Notification.objects.acreate(user=alice, text="after the lock")
    assert f"id: {n.pk}\n" in await alices.body()


async def test_a_stream_beyond_the_users_cap_gets_429_and_others_still_get_in(
    hub: Hub, alice_session: str, bob_session: str, settings: Any
) -> None:
    settings.NOTIFICATIONS_MAX_STREAMS_PER_USER = 2
    for _ in range(2):
        assert (await Exchange(session=alice_session).start()).status == 200

    refused = await Exchange(session=alice_session).start()
    probe = await Exchange(session=alice_session, method="HEAD").start()
    bob = await Exchange(session=bob_session).start()

    assert refused.status == 429
    assert refused.headers["retry-after"] == "10"
    assert refused.headers["content-type"] == "text/plain; charset=utf-8"
    assert "Too many open streams for this account: at most 2" in await refused.body()
    assert probe.status == 429
    assert bob.status == 200
    assert hub.stats.refused == 2


async def test_the_process_cap_refuses_every_user(
    hub: Hub, alice_session: str, bob_session: str, settings: Any
) -> None:
    settings.NOTIFICATIONS_MAX_STREAMS = 1
    assert (await Exchange(session=alice_session).start()).status == 200

    refused = await Exchange(session=bob_session).start()

    assert refused.status == 429
    assert "as many streams as it can" in await refused.body()


async def test_a_closed_stream_frees_its_place_under_the_cap(
    hub: Hub, alice_session: str, settings: Any
) -> None:
    settings.NOTIFICATIONS_MAX_STREAMS_PER_USER = 1
    first = await Exchange(session=alice_session).start()
    await first.body()
    await first.disconnect()
    await wait_until(lambda: hub.stream_count == 0, what="the first stream to end")

    assert (await Exchange(session=alice_session).start()).status == 200


async def test_a_stream_for_another_user_than_the_sessions_gets_403(
    hub: Hub, alice: AbstractUser, bob: AbstractUser, alice_session: str
) -> None:
    mine = await Exchange(session=alice_session, query=f"user={alice.pk}").start()
    theirs = await Exchange(session=alice_session, query=f"user={bob.pk}").start()
    probe = await Exchange(session=alice_session, query=f"user={bob.pk}", method="HEAD").start()
    malformed = await Exchange(session=alice_session, query="user=alice").start()

    assert mine.status == 200
    assert theirs.status == 403
    assert "Signed in as another user" in await theirs.body()
    assert probe.status == 403
    assert malformed.status == 400
    assert "user parameter must be a user id" in await malformed.body()


def test_the_page_opens_its_stream_for_its_own_user(alice: AbstractUser) -> None:
    client = Client()
    client.force_login(alice)
    page = client.get("/")
    assert f"user={alice.pk}" in page.content.decode()
