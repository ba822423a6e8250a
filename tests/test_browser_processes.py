"""The notification centre in Chromium against two daphne processes on PostgreSQL.

One user on two devices (two browser contexts: no shared locks or channel, a stream each),
each on its own process; notifications sent by a third process (this one), marked read on one
device, deleted in the admin: every change reaches the other device through its own process's
stream. The bell on a plain host page has its test in test_browser.py (one process).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import AbstractUser
from django.core.exceptions import ValidationError

from notifications.models import Notification
from notifications.services import send_bulk, send_notification

from .support import DaphneServer, checked_context, server_env, session_for, start_daphne

pytestmark = [
    pytest.mark.postgresql,
    pytest.mark.django_db(transaction=True),
    pytest.mark.asyncio(loop_scope="module"),
]

MS = 1000
BELL = ".notifications-bell"
BELL_BUTTON = ".notifications-bell-button"
BELL_MENU = ".notifications-bell-menu"
READ_API = "/notifications/api/read/"
# The bound: every open stream of the user, on every process, within 1 s.
BOUND = 1.0

# The page's clock (ms) once its list and its bell show notification `id` in `state` ("unread",
# "read" or "gone") and both counts say `unread`; false until then.
SHOWS = """
({id, state, unread}) => {
  const item = document.querySelector(`#notifications li[data-id="${id}"]`);
  const bellItem = document.querySelector(`.notifications-bell [data-id="${id}"]`);
  const counted =
    document.querySelector('#unread-count')?.textContent.trim() === String(unread) &&
    document.querySelector('.notifications-bell-label')?.textContent.trim() ===
      `, ${unread} unread`;
  if (!counted) return false;
  const unreadShown = state === 'unread';
  const shown = state === 'gone'
    ? item === null && bellItem === null
    : item !== null && bellItem !== null &&
      item.classList.contains('is-unread') === unreadShown &&
      bellItem.classList.contains('is-unread') === unreadShown;
  return shown && Date.now();
}
"""


@pytest.fixture
def two_servers(tmp_path: Path, django_db_setup: None) -> Iterator[tuple[DaphneServer, ...]]:
    # Started within the test: the admin caches content type ids per process, and the flush
    # between transactional tests recreates those rows with new ids.
    with (
        start_daphne(server_env(""), tmp_path / "one.log") as one,
        start_daphne(server_env(""), tmp_path / "two.log") as two,
    ):
        yield one, two


async def sign_in(context: Any, server: DaphneServer, user: AbstractUser) -> None:
    session = await sync_to_async(session_for)(user)
    await context.add_cookies([{"name": "sessionid", "value": session, "url": server.url}])


async def wait_shows(page: Any, pk: int, state: str, unread: int, timeout: float) -> int:
    """Wait until the page shows it (see SHOWS); return the page's clock then, in ms."""
    shown = await page.wait_for_function(
        SHOWS, arg={"id": pk, "state": state, "unread": unread}, timeout=timeout * MS, polling=10
    )
    at: int = await shown.json_value()
    return at


def is_post_to(path: str) -> Callable[[Any], bool]:
    return lambda response: response.request.method == "POST" and response.url.endswith(path)


async def test_two_devices_on_two_processes_follow_a_send_a_read_and_an_admin_delete(
    browser: Any,
    two_servers: tuple[DaphneServer, DaphneServer],
    alice: AbstractUser,
    staff: AbstractUser,
    record_property: Callable[[str, object], None],
) -> None:
    one, two = two_servers
    async with (
        checked_context(browser) as phone,
        checked_context(browser) as laptop,
        checked_context(browser) as admin,
    ):
        devices = []
        for device, server in ((phone, one), (laptop, two)):
            await sign_in(device, server, alice)
            page = await device.new_page()
            await page.goto(f"{server.url}/")
            devices.append(page)
        for page in devices:
            await page.wait_for_selector("#connection[data-state=live]", timeout=10 * MS)
            await page.wait_for_selector(f"{BELL}[data-state=live]", timeout=10 * MS)
        on_phone, on_laptop = devices

        # Sent by a third process: this one, through its own database connection.
        send = sync_to_async(send_notification)
        read_me = await send(alice, "Read me on the phone", level="warning")
        delete_me = await send(alice, "Delete me in the admin")
        linked = await send(alice, "Deployed", url="/notifications/?deploy=7", level="success")
        for page in devices:
            for n in (read_me, delete_me, linked):
                await wait_shows(page, n.pk, "unread", 3, timeout=5)
            link = page.locator(f"{BELL} a[data-id='{linked.pk}']")
            assert await link.get_attribute("href") == "/notifications/?deploy=7"
            level = page.locator(f"{BELL} [data-id='{read_me.pk}'] .notifications-level")
            assert await level.get_attribute("data-level") == "warning"

        # Marked read through the phone's bell (process one); the laptop follows through
        # process two's stream.
        await on_phone.click(BELL_BUTTON)
        item = on_phone.locator(f"{BELL_MENU} [data-id='{read_me.pk}']")
        await item.wait_for(timeout=5 * MS)
        # Timed by the browsers' clocks (one machine, one wall clock): from the click's event
        # on the phone to the laptop's page showing the change, without the driver's overhead.
        await on_phone.evaluate(
            "() => document.addEventListener('click', () => { window.clickedAt = Date.now(); },"
            " {capture: true, once: true})"
        )
        async with on_phone.expect_response(is_post_to(READ_API), timeout=5 * MS) as answer:
            await item.click()
        response = await answer.value
        answered_at = time.monotonic()
        assert response.status == 200, await response.text()
        assert await response.json() == {"unread": 2}
        updated = await wait_shows(on_laptop, read_me.pk, "read", 2, timeout=BOUND)
        after_answer = time.monotonic() - answered_at
        latency = (updated - await on_phone.evaluate("window.clickedAt")) / MS
        record_property("read_latency_seconds", round(latency, 3))
        record_property("read_latency_after_answer_seconds", round(after_answer, 3))
        print(
            f"read event across processes: click on the phone (process one) -> the laptop "
            f"(process two) shows it read, list, count and bell, in {latency * MS:.0f} ms "
            f"({after_answer * MS:.0f} ms after the test saw the API's answer)"
        )
        await wait_shows(on_phone, read_me.pk, "read", 2, timeout=5)
        assert await Notification.objects.filter(pk=read_me.pk, read_at__isnull=False).aexists()

        # Deleted through the admin's confirmation page on process one by a staff user.
        await sign_in(admin, one, staff)
        confirm = await admin.new_page()
        await confirm.goto(f"{one.url}/admin/notifications/notification/{delete_me.pk}/delete/")
        delete_path = f"/admin/notifications/notification/{delete_me.pk}/delete/"
        async with confirm.expect_response(is_post_to(delete_path), timeout=5 * MS) as answer:
            await confirm.click("#content form input[type=submit]")
        response = await answer.value
        deleted_at, deleted_wall = time.monotonic(), time.time() * MS
        assert response.status == 302, await response.text()
        assert not await Notification.objects.filter(pk=delete_me.pk).aexists()
        gone = []
        for page in devices:
            remaining = BOUND - (time.monotonic() - deleted_at)
            at = await wait_shows(page, delete_me.pk, "gone", 1, timeout=max(remaining, 0.001))
            # The page's clock against this process's: one machine, one wall clock.
            gone.append((at - deleted_wall) / MS)
        record_property("delete_latency_phone_seconds", round(gone[0], 3))
        record_property("delete_latency_laptop_seconds", round(gone[1], 3))
        print(
            f"deleted event: the admin's answer on process one -> gone, count and bell, from "
            f"the phone (process one) in {gone[0] * MS:.0f} ms, from the laptop (process two) "
            f"in {gone[1] * MS:.0f} ms"
        )
        # What stays: the linked one, unread, on both.
        for page in devices:
            await wait_shows(page, linked.pk, "unread", 1, timeout=1)


async def test_a_javascript_link_is_refused_at_send_and_nothing_is_created(
    alice: AbstractUser,
) -> None:
    for url in ("javascript:alert(1)", "JavaScript:alert(document.cookie)"):
        with pytest.raises(ValidationError, match="(?i)javascript"):
            await sync_to_async(send_notification)(alice, "click me", url=url)
        with pytest.raises(ValidationError, match="(?i)javascript"):
            await sync_to_async(send_bulk)([alice], "click me", url=url)
    assert not await Notification.objects.aexists()
