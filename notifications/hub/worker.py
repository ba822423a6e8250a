"""The hub's one worker thread: every database call of the hub runs there, one at a time.

A process therefore holds one database connection for its streams however many are open (one
per database, when the router puts sessions or users apart from notifications), and no stream
touches the database in its own request thread. The worker counts the queries it runs, by
kind, into the hub's stats.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

from django.db import DatabaseError, connections
from django.db.backends.base.base import BaseDatabaseWrapper

from .. import queries, sessions
from ..sessions import DATA_VERSION
from .stats import HubStats

P = ParamSpec("P")
T = TypeVar("T")

# Seconds a stream waits for the database (authentication, replay) before giving up, and the
# statement timeout of the hub's PostgreSQL connection.
DATABASE_TIMEOUT = 10


def _close_connections() -> None:
    # Run in the worker thread: Django's connections are per thread, and Django refuses to
    # close one from another thread. Only the worker's own connections are open here.
    connections.close_all()


def _aliases() -> list[str]:
    """Return the databases the worker uses: the notifications', then the session checks'."""
    return list(dict.fromkeys([queries.database_alias(), *sessions.database_aliases()]))


class Worker:
    """Run a hub's database functions in one thread of their own, on one connection."""

    def __init__(self, stats: HubStats) -> None:
        self._stats = stats
        self._executor: ThreadPoolExecutor | None = None

    async def run(self, func: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a database function of the poll (a claim, a release, a replay)."""
        return await self._in_thread(lambda: self._call(func, args, kwargs))

    async def run_session_queries(
        self, func: Callable[P, T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run a session check or an authentication; its queries count as session queries.

        The same thread as the claims, queued with them: with thousands of streams, a second
        thread for checks competes with the event loop and the claims for the GIL and makes
        delivery slower.
        """
        return await self._in_thread(lambda: self._call(func, args, kwargs, sessions=True))

    async def close_connection(self) -> None:
        """Close the thread's database connections; the next call opens new ones."""
        # Queued behind whatever the thread still runs, so nothing reopens it after.
        if self._executor is not None:
            with contextlib.suppress(DatabaseError):
                await self.run(_close_connections)

    async def aclose(self) -> None:
        """Close the connection and stop the thread."""
        await self.close_connection()
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None

    async def _in_thread(self, call: Callable[[], T]) -> T:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="notifications")
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    def _call(self, func: Callable[..., T], args: Any, kwargs: Any, sessions: bool = False) -> T:
        def count(execute: Callable[..., Any], sql: str, *params: Any) -> Any:
            if sql == DATA_VERSION:
                self._stats.change_checks += 1
            elif sessions:
                self._stats.session_queries += 1
            else:
                self._stats.queries += 1
            return execute(sql, *params)

        try:
            with contextlib.ExitStack() as wrappers:
                for alias in _aliases():
                    connection = connections[alias]
                    if connection.connection is None:
                        _connect(connection)
                    wrappers.enter_context(connection.execute_wrapper(count))
                return func(*args, **kwargs)
        except DatabaseError:
            # The next call opens new connections rather than reusing a broken one.
            with contextlib.suppress(DatabaseError):
                _close_connections()
            raise


def _connect(connection: BaseDatabaseWrapper) -> None:
    connection.ensure_connection()
    if connection.vendor == "postgresql":
        # A lock held elsewhere (a migration, a long transaction) must not stall every
        # stream of the process: the statement fails, and the poll tries again.
        with connection.cursor() as cursor:
            cursor.execute("SET statement_timeout = %s", [f"{DATABASE_TIMEOUT}s"])
            cursor.execute("SET lock_timeout = %s", [f"{DATABASE_TIMEOUT / 2}s"])
