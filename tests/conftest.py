from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from asgiref.sync import SyncToAsync
from django.contrib.auth.models import AbstractUser
from django.db import connections

from notifications.hub import Hub, get_hub

from .support import (
    CHROMIUM,
    CHROMIUM_ARGS,
    MIRROR,
    DaphneServer,
    PgBouncer,
    make_user,
    pgbouncer_path,
    server_env,
    session_for,
    start_daphne,
    start_pgbouncer,
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    from django.conf import settings

    # Not a skip: bin/test runs the suite twice, and each pass runs the tests marked for it
    # (`postgresql` in the PostgreSQL pass; `sqlite` in the SQLite pass, for tests that bring
    # a database of their own and would only repeat themselves).
    postgresql = settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"
    other_pass = "sqlite" if postgresql else "postgresql"
    selected = [item for item in items if item.get_closest_marker(other_pass) is None]
    deselected = [item for item in items if item.get_closest_marker(other_pass) is not None]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = selected


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.skipped and os.environ.get("CI") and not hasattr(report, "wasxfail"):
        # CI provides everything the suite needs (PostgreSQL, a browser): a skip there means
        # a missing install step, and must not pass for green.
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where nothing may be skipped: {report.longrepr}"
    return report


@pytest.fixture(scope="session")
def django_db_modify_db_settings(
    django_db_modify_db_settings_parallel_suffix: None, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from django.conf import settings

    database = settings.DATABASES["default"]
    if database["ENGINE"] == "django.db.backends.sqlite3":
        # A file, not Django's in-memory test database: the daphne server under test is another
        # process, and the hub's worker thread needs its own connection to the same data.
        path = tmp_path_factory.mktemp("sqlite") / "test.sqlite3"
        database.setdefault("TEST", {})["NAME"] = str(path)
    # A second alias on the same test database, for the tests of database routers.
    settings.DATABASES[MIRROR] = {
        **database,
        "TEST": {**database.get("TEST", {}), "MIRROR": "default"},
    }


@pytest.fixture(autouse=True)
def _close_async_orm_connections() -> Iterator[None]:
    yield
    # The async ORM runs in asgiref's process-wide thread; its connection must not outlive
    # the test (PostgreSQL will not drop a test database that still has one).
    SyncToAsync.single_thread_executor.submit(connections.close_all).result(timeout=30)


@pytest.fixture
def mirror_database(transactional_db: None) -> Iterator[str]:
    """Return the alias MIRROR, for a test marked with `databases=["default", MIRROR]`.

    Request it before `hub`: its connections are closed after the hub's.
    """
    yield MIRROR
    connections[MIRROR].close()


@pytest.fixture
async def hub() -> AsyncIterator[Hub]:
    hub = get_hub()
    yield hub
    await hub.aclose()


@pytest.fixture
def alice(transactional_db: None) -> AbstractUser:
    return make_user("alice")


@pytest.fixture
def bob(transactional_db: None) -> AbstractUser:
    return make_user("bob")


@pytest.fixture
def staff(transactional_db: None) -> AbstractUser:
    return make_user("staff", is_staff=True, is_superuser=True)


@pytest.fixture(scope="session")
def daphne_server(
    django_db_setup: None, django_db_blocker: object, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DaphneServer]:
    env = server_env(
        NOTIFICATIONS_SESSION_CHECK_INTERVAL="1",
        # Above the 21 streams per user that the thread-count test opens.
        NOTIFICATIONS_MAX_STREAMS_PER_USER=str(LIVE_MAX_STREAMS_PER_USER),
    )
    log = Path(tmp_path_factory.mktemp("daphne")) / "daphne.log"
    with start_daphne(env, log) as server:
        yield server


LIVE_MAX_STREAMS_PER_USER = 25


@pytest.fixture
def alice_session(alice: AbstractUser) -> str:
    return session_for(alice)


@pytest.fixture
def bob_session(bob: AbstractUser) -> str:
    return session_for(bob)


@pytest.fixture
def empty_change_log(transactional_db: None) -> None:
    """Start with no changes recorded.

    On SQLite the test database is emptied with DELETE between tests, and the deletion
    trigger records each notification it removes, whichever table goes first.
    """
    from notifications.models import Change

    Change.objects.all().delete()


@pytest.fixture
def fast_poll(settings: Any) -> None:
    settings.NOTIFICATIONS_POLL_INTERVAL = 0.05
    settings.NOTIFICATIONS_SESSION_CHECK_INTERVAL = 0.1


@pytest.fixture
def pgbouncer(tmp_path: Path, transactional_db: None) -> Iterator[PgBouncer]:
    """PgBouncer in transaction pooling mode in front of the test database."""
    if pgbouncer_path() is None:
        pytest.skip("pgbouncer is not installed (Debian: apt-get install pgbouncer; .ci/run does)")
    directory = tmp_path / "pgbouncer"
    directory.mkdir()
    with start_pgbouncer(directory) as bouncer:
        yield bouncer


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Any]:
    """Debian's Chromium, one for the module; a browser context per test keeps them apart.

    A module using it runs its tests in the module's event loop
    (`pytest.mark.asyncio(loop_scope="module")`).
    """
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
