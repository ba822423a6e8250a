"""The page in a real browser: Debian's Chromium driven by Playwright, against live daphne."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import AbstractUser

from notifications.models import Notification

from .conftest import make_user
from .support import DaphneServer

pytestmark = pytest.mark.django_db(transaction=True)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PASSWORD = "correct horse battery staple"
# Screenshots a person can look at after a run (not compared by the test).
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    if not shutil.which(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    playwright_api = pytest.importorskip("playwright.async_api")
    async with playwright_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
def dave(transactional_db: None) -> AbstractUser:
    user = make_user("dave")
    user.set_password(PASSWORD)
    user.save()
    return user


async def test_login_live_notification_and_logout_in_another_tab(
    browser: Any, daphne_server: DaphneServer, dave: AbstractUser
) -> None:
    context = await browser.new_context()
    page = await context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: dialogs.append(dialog.message))
    history = await Notification.objects.acreate(user=dave, text="From before\nsecond line")

    await page.goto(f"{daphne_server.url}/")
    assert "/accounts/login/" in page.url
    await page.fill("input[name=username]", "dave")
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_selector("#connection[data-state=live]", timeout=10_000)
    assert await page.inner_text(f"li[data-id='{history.pk}'] .text") == "From before\nsecond line"

    hostile = "<img src=x onerror=alert(1)>\nand a second line"
    live = await sync_to_async(Notification.objects.create)(user=dave, text=hostile)
    item = await page.wait_for_selector(f"li[data-id='{live.pk}']", timeout=5_000)
    assert await (await item.query_selector(".text")).inner_text() == hostile
    assert await page.locator("#notifications li").count() == 2
    assert await page.locator("#notifications img").count() == 0
    assert dialogs == []
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=ARTIFACTS / "page-light.png")
    await page.emulate_media(color_scheme="dark")
    await page.screenshot(path=ARTIFACTS / "page-dark.png")

    other = await context.new_page()
    await other.goto(f"{daphne_server.url}/")
    await other.click("form.logout button")
    await page.wait_for_selector("#connection[data-state=signed-out]", timeout=15_000)
    assert "/accounts/login/" in await page.get_attribute("#connection a", "href")
    await context.close()
