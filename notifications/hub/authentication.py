"""Authentication of new streams, batched: who is behind each session key, a few queries for all.

Streams that open while a check runs are checked together in the next one, so a thousand
browsers reconnecting at once (after a restart) cost a few queries, not a thousand.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars

from .. import sessions
from . import worker
from .worker import Worker


class Authenticator:
    """Answer "which user is logged in with this session key?" for a hub's new streams."""

    def __init__(self, runner: Worker) -> None:
        self._worker = runner
        self._waiting: dict[str, list[asyncio.Future[int | None]]] = {}
        self._task: asyncio.Task[None] | None = None

    async def authenticate(self, session_key: str) -> int | None:
        """Return the id of the user logged in with this session key, or None.

        Raise TimeoutError when the database does not answer within DATABASE_TIMEOUT.
        """
        answer: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(session_key, []).append(answer)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._authenticate_waiting(), context=contextvars.Context()
            )
        async with asyncio.timeout(worker.DATABASE_TIMEOUT):
            return await answer

    async def aclose(self) -> None:
        """Stop the check that runs, if any."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _authenticate_waiting(self) -> None:
        while self._waiting:
            waiting, self._waiting = self._waiting, {}
            try:
                users = await self._worker.run_session_queries(
                    sessions.session_users, list(waiting)
                )
            except Exception as exc:
                for answers in waiting.values():
                    for answer in answers:
                        if not answer.done():
                            answer.set_exception(exc)
            else:
                for key, answers in waiting.items():
                    for answer in answers:
                        if not answer.done():
                            answer.set_result(users.get(key))
