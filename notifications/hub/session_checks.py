"""Session checks: the streams whose session ended (logout, expiry, a password change) or
whose user was deactivated, found for all of a hub's streams in a few batches.

The hub's worker runs its claims and these checks one at a time. A check of thousands of
sessions reads and judges each of them whenever anything was committed since the last one,
so it is split into parts of about PART_SIZE keys, each a job of its own: a claim queued
meanwhile waits for one part, not for the whole check. On PostgreSQL, where the change token
moves with any commit at all, one query first tells which parts' rows changed
(sessions.fingerprints()); the others keep their last answer.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Collection

from .. import sessions
from .subscription import Subscription
from .worker import Worker

# Session keys per part of a check.
PART_SIZE = 500


class SessionChecker:
    """Check a hub's open streams against their sessions, remembering what did not change."""

    def __init__(self, runner: Worker) -> None:
        self._worker = runner
        # One cache per part: a part whose keys are unchanged since the database last
        # changed costs nothing.
        self._caches: list[sessions.SessionCache] = [sessions.SessionCache()]

    async def ended(self, subscriptions: Collection[Subscription]) -> list[Subscription]:
        """Return the subscriptions whose session no longer logs in their user."""
        parts = max(1, math.ceil(len({s.session_key for s in subscriptions}) / PART_SIZE))
        if parts != len(self._caches):
            self._caches = [sessions.SessionCache() for _ in range(parts)]
        by_part: list[set[str]] = [set() for _ in range(parts)]
        users_by_part: list[set[int]] = [set() for _ in range(parts)]
        for subscription in subscriptions:
            # A key stays in its part while the number of parts stays: its cache knows it.
            number = zlib.crc32(subscription.session_key.encode()) % parts
            by_part[number].add(subscription.session_key)
            users_by_part[number].add(subscription.user_id)
        # Read once, before every part: a commit after it makes the next check judge again.
        token = await self._worker.run_session_queries(sessions.change_token)
        digests: list[str | None] = [None] * parts
        # Parts that something was committed since, or that have new keys: one query tells
        # (on PostgreSQL) which parts' sessions and users changed; only those are read and
        # judged again (and a part read in full keeps the digest read before, for the next).
        stale = [
            n
            for n, cache in enumerate(self._caches)
            if cache.token != token or not by_part[n] <= cache.keys
        ]
        if token is not None and stale:
            found = await self._worker.run_session_queries(
                sessions.fingerprints,
                [(by_part[n], users_by_part[n] | self._caches[n].user_ids()) for n in stale],
            )
            for n, digest in zip(stale, found, strict=True):
                digests[n] = digest
        valid: dict[str, int] = {}
        for part, cache, digest in zip(by_part, self._caches, digests, strict=True):
            valid |= await self._worker.run_session_queries(
                sessions.session_users, part, cache=cache, token=token, fingerprint=digest
            )
        return [s for s in subscriptions if not s.closed and valid.get(s.session_key) != s.user_id]
