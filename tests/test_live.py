"""A real daphne server on 127.0.0.1, read by a real SSE client (httpx-sse)."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import AbstractUser
from httpx_sse import ServerSentEvent

from notifications.models import Notification

from .conftest import session_for
from .support import DaphneServer, StreamReader

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
        await stream.ended.wait()
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
