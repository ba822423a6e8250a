"""Change watchers: wake the poll when another process commits notifications.

PostgreSQL: a LISTEN connection hears the insert trigger's NOTIFY (migration 0003). SQLite:
the file's data_version changes when another connection commits. Either only hastens the poll,
which still runs every poll interval.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from django.db import DatabaseError, connections

from .. import conf, queries
from ..sessions import DATA_VERSION
from . import worker
from .worker import Worker

logger = logging.getLogger(__name__)

# The channel the insert trigger NOTIFYs on PostgreSQL (migration 0003).
POSTGRES_CHANNEL = "notifications_created"

# Seconds of silence after which the LISTEN connection is checked with a query.
LISTEN_CHECK_INTERVAL = 60.0


def _data_version() -> int:
    with connections[queries.database_alias()].cursor() as cursor:
        cursor.execute(DATA_VERSION)
        row = cursor.fetchone()
    return int(row[0])


class ChangeWatcher:
    """Call `wake` when another connection commits notifications."""

    def __init__(self, wake: Callable[[], None], runner: Worker) -> None:
        self._wake = wake
        self._worker = runner
        # True while a PostgreSQL LISTEN connection waits for NOTIFYs.
        self.listening = False

    async def run(self) -> None:
        """Watch the database that holds notifications until cancelled (the poll still runs)."""
        connection = connections[queries.database_alias()]
        try:
            if connection.vendor == "postgresql":
                await self._listen_postgresql(connection.get_connection_params())
            elif connection.vendor == "sqlite":
                await self._watch_sqlite()
        except Exception:
            # The poll alone still delivers, within its interval.
            logger.exception("Watching for new notifications failed")

    async def _listen_postgresql(self, params: dict[str, Any]) -> None:
        import psycopg

        for django_only in ("context", "cursor_factory", "prepare_threshold"):
            params.pop(django_only, None)
        params.setdefault("connect_timeout", worker.DATABASE_TIMEOUT)
        delay = 1.0
        while True:
            try:
                listener = await psycopg.AsyncConnection.connect(**params, autocommit=True)
                async with listener:
                    await listener.execute(f"LISTEN {POSTGRES_CHANNEL}")
                    self.listening = True
                    delay = 1.0
                    # Rows inserted while nobody listened: look now.
                    self._wake()
                    while True:
                        # A NOTIFY wakes the poll; a quiet minute makes sure the connection
                        # still answers (one dropped silently would otherwise never notify).
                        async for _ in listener.notifies(timeout=LISTEN_CHECK_INTERVAL):
                            self._wake()
                        async with asyncio.timeout(worker.DATABASE_TIMEOUT):
                            await listener.execute("SELECT 1")
                        self._wake()  # in case a NOTIFY came with the check's answer
            except (psycopg.Error, OSError, TimeoutError) as exc:
                logger.warning(
                    "LISTEN connection failed (%s); the poll alone delivers until it is back",
                    exc,
                )
            finally:
                self.listening = False
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    async def _watch_sqlite(self) -> None:
        # data_version changes when another connection (a process, a request thread) commits
        # to the database file; reading it costs microseconds, not a query plan.
        interval = conf.change_check_interval()
        last: int | None = None
        while True:
            try:
                async with asyncio.timeout(worker.DATABASE_TIMEOUT):
                    version = await self._worker.run(_data_version)
            except (DatabaseError, TimeoutError):
                version = None
            # A first reading (or the first after an error) wakes too: a commit just before
            # it would otherwise wait for the poll interval.
            if version is not None and version != last:
                self._wake()
            last = version
            await asyncio.sleep(interval)
