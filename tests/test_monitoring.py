"""/healthz and /metrics: in-process (the test's event loop holds the hub) and on daphne."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import AbstractUser
from django.db import connection, transaction
from django.test import AsyncClient

from notifications import monitoring
from notifications.hub import Hub
from notifications.models import Notification

from .support import DaphneServer, make_user, server_env, start_daphne, wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fast_poll")]


class RemoteClient(AsyncClient):
    """A client whose requests come from another host (the ASGI scope's client address)."""

    def __init__(self, address: str = "203.0.113.7", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.address = address

    def _base_scope(self, **request: Any) -> dict[str, Any]:
        scope: dict[str, Any] = super()._base_scope(**request)
        scope["client"] = [self.address, 40000]
        return scope


async def test_healthz_is_ok_with_no_stream_open() -> None:
    response = await AsyncClient().get("/healthz")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert json.loads(response.content) == {"status": "ok", "database": "ok", "poller": "idle"}
    assert "no-cache" in response["Cache-Control"]


async def test_healthz_is_ok_while_the_poll_runs(
    hub: Hub, alice: AbstractUser, alice_session: str
) -> None:
    subscription = hub.subscribe(alice.pk, alice_session)
    await wait_until(lambda: hub.stats.ticks >= 2, what="the poll to run")

    response = await RemoteClient().get("/healthz")

    assert response.status_code == 200
    assert json.loads(response.content)["poller"] == "ok"
    assert hub.stream_count == 1
    hub.unsubscribe(subscription)


async def test_healthz_is_503_when_the_poll_is_stuck(
    hub: Hub, alice: AbstractUser, alice_session: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(monitoring, "STALE_MARGIN", 0.3)
    subscription = hub.subscribe(alice.pk, alice_session)
    await wait_until(lambda: hub.stats.ticks >= 1, what="the poll to start")
    # Hold the hub's one worker thread: the next poll waits behind it, as behind a hung query.
    release = threading.Event()
    stuck = asyncio.ensure_future(hub.run(release.wait, 30))
    try:
        await wait_until(
            lambda: time.monotonic() - hub.stats.last_tick > 3 * 0.05 + 0.3 + 0.1,  # type: ignore[operator]
            what="the last poll to age",
        )
        response = await AsyncClient().get("/healthz")
    finally:
        release.set()
        await stuck
    body = json.loads(response.content)

    assert response.status_code == 503
    assert body["status"] == "error"
    assert body["database"] == "ok"
    assert body["poller"].startswith("stale: last poll ")
    assert body["reason"].startswith("poller stale: last poll ")
    # And healthy again once the poll moves on.
    await wait_until(lambda: time.monotonic() - hub.stats.last_tick < 0.2, what="a new poll")  # type: ignore[operator]
    assert (await AsyncClient().get("/healthz")).status_code == 200
    assert hub.polling
    hub.unsubscribe(subscription)


def test_poller_state() -> None:
    idle = {"polling": False, "last_tick": None}
    assert monitoring.poller_state(idle, 100.0) == (True, "idle")
    assert monitoring.poller_state({"polling": True, "last_tick": None}, 100.0) == (
        True,
        "starting",
    )
    limit = 3 * 0.05 + monitoring.STALE_MARGIN
    assert monitoring.poller_state({"polling": True, "last_tick": 100.0}, 100 + limit - 0.01)[0]
    ok, word = monitoring.poller_state({"polling": True, "last_tick": 100.0}, 100 + limit + 1)
    assert not ok and word.startswith("stale")


def test_healthz_is_503_when_the_database_is_down(tmp_path: Path) -> None:
    # Nothing listens on port 1: every connection is refused at once.
    env = server_env(DATABASE_URL="postgres://postgres@127.0.0.1:1/nothing")
    with start_daphne(env, tmp_path / "daphne.log") as server:
        response = httpx.get(f"{server.url}/healthz", timeout=10)
        log = server.log.read_text()

    assert response.status_code == 503
    assert response.json() == {
        "status": "error",
        "database": "error: OperationalError",
        "poller": "idle",
        "reason": "database error: OperationalError",
    }
    assert "Health check: the database failed" in log


def test_healthz_on_a_live_server(daphne_server: DaphneServer) -> None:
    response = httpx.get(f"{daphne_server.url}/healthz", timeout=10)
    assert response.status_code == 200
    assert response.json()["database"] == "ok"


@pytest.mark.postgresql
def test_healthz_answers_503_within_its_timeout_while_the_table_is_locked(
    daphne_server: DaphneServer,
) -> None:
    # A migration holding the table: the check must answer, not hang with the query.
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"LOCK TABLE {Notification._meta.db_table} IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        response = httpx.get(f"{daphne_server.url}/healthz", timeout=20)
        elapsed = time.monotonic() - started

    assert response.status_code == 503
    assert response.json()["database"] == "timeout: no answer within 3s"
    assert monitoring.HEALTH_DATABASE_TIMEOUT <= elapsed < monitoring.HEALTH_DATABASE_TIMEOUT + 2
    # Lock released: healthy again.
    assert httpx.get(f"{daphne_server.url}/healthz", timeout=20).status_code == 200


async def test_metrics_from_this_host_as_prometheus_text(
    hub: Hub, alice: AbstractUser, alice_session: str
) -> None:
    subscription = hub.subscribe(alice.pk, alice_session)
    await Notification.objects.acreate(user=alice, text="counted")
    await wait_until(lambda: hub.stats.claimed == 1, what="the claim")

    response = await AsyncClient().get("/metrics")

    assert response.status_code == 200
    assert response["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    text = response.content.decode()
    values = dict(line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))
    assert values["notifications_streams_open"] == "1.0"
    assert values["notifications_users_connected"] == "1.0"
    assert values["notifications_dispatched_total"] == "1.0"
    assert values["notifications_delivered_total"] == "1.0"
    assert values["notifications_polling"] == "1.0"
    assert float(values["notifications_polls_total"]) >= 1
    assert float(values["notifications_rows_read_total"]) >= 0
    assert values["notifications_holes"] == "0.0"
    assert 0 <= float(values["notifications_last_poll_age_seconds"]) < 5
    assert "# TYPE notifications_dispatched_total counter" in text
    assert "counted" not in text
    hub.unsubscribe(subscription)


async def test_metrics_as_json(hub: Hub, alice: AbstractUser, alice_session: str) -> None:
    subscription = hub.subscribe(alice.pk, alice_session)
    await wait_until(lambda: hub.stats.ticks >= 1, what="the poll to run")

    by_query = await AsyncClient().get("/metrics?format=json")
    by_accept = await AsyncClient().get("/metrics", headers={"Accept": "application/json"})

    for response in (by_query, by_accept):
        assert response.status_code == 200
        assert response["Content-Type"] == "application/json"
        body = json.loads(response.content)
        assert body["streams"] == 1
        assert body["polling"] is True
        assert (body["holes"], body["late_holes"]) == (0, 0)
        assert body["rows_read"] >= 0
        assert isinstance(body["listening"], bool)
        assert 0 <= body["last_tick_age"] < 5
        assert "last_tick" not in body
    hub.unsubscribe(subscription)


async def test_metrics_refuse_anonymous_and_non_staff_requests_from_elsewhere() -> None:
    anonymous = await RemoteClient().get("/metrics")
    assert anonymous.status_code == 403

    user = await sync_to_async(make_user)("alice")
    client = RemoteClient()
    await client.aforce_login(user)
    assert (await client.get("/metrics")).status_code == 403


async def test_metrics_allow_staff_from_elsewhere() -> None:
    staff = await sync_to_async(make_user)("ops", is_staff=True)
    client = RemoteClient()
    await client.aforce_login(staff)
    assert (await client.get("/metrics")).status_code == 200


async def test_metrics_refuse_a_local_request_that_came_through_a_proxy() -> None:
    proxied = await AsyncClient().get("/metrics", headers={"X-Forwarded-For": "203.0.113.7"})
    assert proxied.status_code == 403
    # A forged header from elsewhere proves nothing either way.
    forged = await RemoteClient().get("/metrics", headers={"X-Forwarded-For": "127.0.0.1"})
    assert forged.status_code == 403
    ipv6 = await RemoteClient("::1").get("/metrics")
    assert ipv6.status_code == 200
