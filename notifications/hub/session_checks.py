"""Session checks: the streams whose session ended (logout, expiry, a password change) or
whose user was deactivated, found for all of a hub's streams in one batch."""

from __future__ import annotations

from collections.abc import Collection

from .. import sessions
from .subscription import Subscription
from .worker import Worker


class SessionChecker:
    """Check a hub's open streams against their sessions, remembering what did not change."""

    def __init__(self, runner: Worker) -> None:
        self._worker = runner
        self._cache = sessions.SessionCache()

    async def ended(self, subscriptions: Collection[Subscription]) -> list[Subscription]:
        """Return the subscriptions whose session no longer logs in their user."""
        valid = await self._worker.run_session_queries(
            sessions.session_users, {s.session_key for s in subscriptions}, cache=self._cache
        )
        return [s for s in subscriptions if not s.closed and valid.get(s.session_key) != s.user_id]
