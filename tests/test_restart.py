"""A graceful restart under a connected client: SIGTERM, rows created while down, resume."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import AbstractUser

from notifications.models import Notification

from .support import StreamReader, server_env, session_for, start_daphne, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


async def create(user: AbstractUser, text: str) -> int:
    return (await Notification.objects.acreate(user=user, text=text)).pk


def client(url: str, session: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=url, cookies={"sessionid": session}, timeout=httpx.Timeout(10, read=60)
    )


async def test_every_notification_created_around_a_restart_arrives_exactly_once(
    alice: AbstractUser, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = server_env("")
    session = await sync_to_async(session_for)(alice)
    created: list[int] = []
    received: list[int] = []

    with start_daphne(env, tmp_path / "first.log") as first:
        port = first.port
        async with client(first.url, session) as http:
            stream = await StreamReader(http).__aenter__()
            try:
                assert stream.status == 200
                for i in range(3):
                    created.append(await create(alice, f"before {i}"))
                    event = await stream.next()
                    assert event.id == str(created[-1])
                    received.append(int(event.id))
                # Created just before the SIGTERM: sent, claimed but unsent, or not yet claimed.
                for i in range(3):
                    created.append(await create(alice, f"at the restart {i}"))
                stopping = time.monotonic()
                first.process.terminate()
                await wait_until(lambda: first.process.poll() is not None, 20, "daphne to exit")
                stopped_after = time.monotonic() - stopping
                await wait_until(stream.ended.is_set, 10, "the stream to end")
                while not stream.events.empty():
                    received.append(int(stream.events.get_nowait().id))
            finally:
                # The server went away mid-response: the client sees the connection drop.
                with contextlib.suppress(httpx.RemoteProtocolError):
                    await stream.__aexit__(None, None, None)

    for i in range(3):
        created.append(await create(alice, f"while down {i}"))

    with start_daphne(env, tmp_path / "second.log", port=port) as second:
        assert second.port == port
        # What the page's EventSource does: reconnect with the id of the last event it got.
        resume = {"Last-Event-ID": str(received[-1])}
        async with (
            client(second.url, session) as http,
            StreamReader(http, headers=resume) as stream,
        ):
            assert stream.status == 200
            deadline = time.monotonic() + 20
            while set(created) - set(received) and time.monotonic() < deadline:
                received.append(int((await stream.next()).id))
            # Nothing further (no second copy of anything) comes before a new row.
            marker = await create(alice, "after the restart")
            assert int((await stream.next()).id) == marker

    assert sorted(received) == sorted(created)
    assert len(received) == len(set(received)), f"duplicates: {received}"
    with capsys.disabled():
        print(f"\ndaphne exited {stopped_after:.2f}s after SIGTERM with a stream open")
