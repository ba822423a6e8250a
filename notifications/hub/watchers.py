"""Change watchers: wake the poll when another process commits notifications.

PostgreSQL: a LISTEN connection hears the insert trigger's NOTIFY (migration 0003). SQLite:
the file's data_version changes when another connection commits. Either only hastens the poll,
which still runs every poll interval.

A pooler in transaction mode (PgBouncer) breaks LISTEN without an error: the session that
listens is handed to other clients between transactions, and its notifications go nowhere
(pgbouncer #976; NOTIFY through it works). NOTIFICATIONS_LISTEN_DATABASE_URL gives LISTEN a
direct connection of its own. Either way, the listener first sends itself a NOTIFY through the
ordinary (possibly pooled) connection: if it does not arrive, one warning says so, and the
process relies on the poll alone from then on.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
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

# Seconds the listener waits for the NOTIFY it sent itself at start. Generous: other NOTIFYs
# still wake the poll meanwhile, and a loaded machine must not pass for a broken pooler.
PROBE_TIMEOUT = 10.0

# Set in a process once its LISTEN connection failed the probe: no hub of the process listens
# again (nor warns again); the poll delivers. And once it passed: a reconnect (a connection
# cut by the server) need not probe again.
_listen_broken = False
_listen_verified = False


class ListenBroken(Exception):
    """The LISTEN connection does not receive what is sent to it."""


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
                if not _listen_broken:
                    await self._listen_postgresql(connection.get_connection_params())
            elif connection.vendor == "sqlite":
                await self._watch_sqlite()
        except Exception:
            # The poll alone still delivers, within its interval.
            logger.exception("Watching for new notifications failed")

    async def _listen_postgresql(self, params: dict[str, Any]) -> None:
        global _listen_broken, _listen_verified
        import psycopg

        url = conf.listen_database_url()
        for django_only in ("context", "cursor_factory", "prepare_threshold"):
            params.pop(django_only, None)
        params.setdefault("connect_timeout", worker.DATABASE_TIMEOUT)
        delay = 1.0
        while True:
            try:
                if url:
                    listener = await psycopg.AsyncConnection.connect(
                        url, autocommit=True, connect_timeout=worker.DATABASE_TIMEOUT
                    )
                else:
                    listener = await psycopg.AsyncConnection.connect(**params, autocommit=True)
                async with listener:
                    await listener.execute(f"LISTEN {POSTGRES_CHANNEL}")
                    if not _listen_verified:
                        await self._probe(listener)
                        _listen_verified = True
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
            except ListenBroken:
                _listen_broken = True
                logger.warning(
                    "LISTEN does not receive notifications through this connection: a NOTIFY "
                    "sent through the database connection did not arrive within %g s (a pooler "
                    "in transaction mode, such as PgBouncer, does this). New notifications from "
                    "other processes now wait for the poll (NOTIFICATIONS_POLL_INTERVAL). Set "
                    "NOTIFICATIONS_LISTEN_DATABASE_URL to a direct connection to PostgreSQL for "
                    "LISTEN.",
                    PROBE_TIMEOUT,
                )
                return
            except (psycopg.Error, OSError, TimeoutError, DatabaseError) as exc:
                logger.warning(
                    "LISTEN connection failed (%s); the poll alone delivers until it is back",
                    exc,
                )
            finally:
                self.listening = False
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    async def _probe(self, listener: Any) -> None:
        """Send the listener a NOTIFY through the ordinary connection; raise ListenBroken if
        it does not arrive within PROBE_TIMEOUT.

        On a channel of its own, so other processes are not woken by it.
        """
        channel = f"notifications_probe_{os.getpid()}_{secrets.token_hex(4)}"
        await listener.execute(f"LISTEN {channel}")
        async with asyncio.timeout(worker.DATABASE_TIMEOUT):
            await self._worker.run(queries.notify, channel, "probe")
        arrived = False
        async for notification in listener.notifies(timeout=PROBE_TIMEOUT):
            if notification.channel == channel:
                arrived = True
                break
            self._wake()
        await listener.execute(f"UNLISTEN {channel}")
        if not arrived:
            raise ListenBroken

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
