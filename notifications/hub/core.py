"""The hub: one per event loop, it claims notifications for all the loop's streams and fans
them out.

A stream subscribes its user to the hub of its event loop. While anyone is subscribed, the hub
claims the recent undispatched notifications of all subscribed users in one query, and hands
each claimed row to every subscription of its user. It polls when woken (a notification saved
in this process, a change watcher) and at least once a poll interval; and it runs the regular
session check that ends the streams whose sessions ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from .. import conf, queries
from ..models import Notification
from . import worker
from .admission import StreamRefused, check_caps, sweep_unstarted
from .authentication import Authenticator
from .gcfreeze import keep_long_lived_out_of_gc
from .session_checks import SessionChecker
from .stats import HubStats
from .subscription import Subscription
from .watchers import ChangeWatcher
from .worker import Worker

logger = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

# Rows claimed per query; a larger backlog is claimed by the next queries without a pause.
CLAIM_LIMIT = 1000

# Least seconds between two polls, so a burst of wake-ups is claimed in few queries; after a
# claim query that took long (a large backlog in the recent window), twice its duration.
MIN_POLL_GAP = 0.01


class _Outage:
    """Log the first failure of a recurring job with its traceback, and its recovery; not
    every retry in between."""

    def __init__(self, job: str) -> None:
        self.job = job
        self.failing = False

    def failed(self) -> None:
        """Call from an `except` block."""
        if not self.failing:
            logger.exception("%s failed; retrying every interval", self.job)
        self.failing = True

    def recovered(self) -> None:
        if self.failing:
            logger.warning("%s recovered", self.job)
        self.failing = False


class Hub:
    """Claim notifications for the streams of one event loop and fan them out."""

    def __init__(self) -> None:
        self.stats = HubStats()
        self._subscriptions: dict[int, set[Subscription]] = {}
        self._stream_count = 0
        # The users with a stream, as the claim query's filter; None when it must be rebuilt.
        self._user_ids: frozenset[int] | None = None
        # Seconds the last claim query took in the worker (not waiting for it).
        self._claim_seconds = 0.0
        # Subscriptions whose stream may not have started yet (see admission.sweep_unstarted).
        self._unstarted: set[Subscription] = set()
        self._to_release: list[int] = []
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._worker = Worker(self.stats)
        self._watcher = ChangeWatcher(self.wake, self._worker)
        self._authenticator = Authenticator(self._worker)
        self._session_checker = SessionChecker(self._worker)

    # Streams' side.

    @property
    def polling(self) -> bool:
        """True while the poll runs (it stops when no stream is open)."""
        return self._task is not None and not self._task.done()

    @property
    def listening(self) -> bool:
        """True while a PostgreSQL LISTEN connection waits for NOTIFYs."""
        return self._watcher.listening

    @property
    def stream_count(self) -> int:
        return self._stream_count

    def check_admission(self, user_id: int) -> None:
        """Raise StreamRefused if a new stream of this user would exceed a cap."""
        try:
            check_caps(len(self._subscriptions.get(user_id, ())), self._stream_count)
        except StreamRefused:
            self.stats.refused += 1
            raise

    def admit(self, user_id: int, session_key: str) -> Subscription:
        """Subscribe a new stream of the user, or raise StreamRefused if a cap is reached."""
        self.check_admission(user_id)
        return self.subscribe(user_id, session_key)

    async def authenticate(self, session_key: str) -> int | None:
        """Return the id of the user logged in with this session key, or None.

        Streams that open while a check runs are checked together in the next one. Raise
        TimeoutError when the database does not answer within DATABASE_TIMEOUT.
        """
        return await self._authenticator.authenticate(session_key)

    async def replay(
        self, subscription: Subscription, after_id: int, limit: int
    ) -> list[Notification]:
        """Return the notifications of the subscription's user after `after_id`.

        What the replay claims also goes to the user's other streams. Raise TimeoutError when
        the database does not answer within DATABASE_TIMEOUT.
        """
        abandoned = False

        def share(done: asyncio.Future[queries.Shown]) -> None:
            # Runs when the query ends, even if this stream gave up waiting (timeout, client
            # gone): what it claimed still reaches the user's other streams, or is released.
            if done.cancelled() or done.exception() is not None:
                return
            nobody = self.deliver(done.result().claimed, skip=subscription)
            if abandoned and nobody:
                self._to_release.extend(n.pk for n in nobody)
                self.wake()

        query = asyncio.ensure_future(
            self.run(queries.replay, subscription.user_id, after_id, limit)
        )
        query.add_done_callback(share)
        try:
            async with asyncio.timeout(worker.DATABASE_TIMEOUT):
                shown = await asyncio.shield(query)
        except BaseException:
            abandoned = True
            raise
        return shown.rows

    def deliver(
        self, notifications: list[Notification], *, skip: Subscription | None = None
    ) -> list[Notification]:
        """Hand each notification to every stream of its user; return those nobody took."""
        unclaimed = []
        for notification in notifications:
            subs = [s for s in self._subscriptions.get(notification.user_id, ()) if s is not skip]
            for subscription in subs:
                subscription.push(notification)
            if subs:
                self.stats.delivered += 1
            else:
                unclaimed.append(notification)
        return unclaimed

    def subscribe(self, user_id: int, session_key: str) -> Subscription:
        """Start receiving the user's notifications; the poll starts with the first subscriber."""
        subscription = Subscription(user_id, session_key)
        if user_id not in self._subscriptions:
            self._subscriptions[user_id] = set()
            self._user_ids = None
        self._subscriptions[user_id].add(subscription)
        self._unstarted.add(subscription)
        self._stream_count += 1
        if self._task is None or self._task.done():
            # A fresh context: the poll outlives the request that happened to start it.
            self._task = asyncio.get_running_loop().create_task(
                self._poll(), context=contextvars.Context()
            )
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        """Stop a subscription. What it held unsent is released if its user has no other."""
        self._unstarted.discard(subscription)
        subs = self._subscriptions.get(subscription.user_id)
        if subs is not None and subscription in subs:
            subs.remove(subscription)
            self._stream_count -= 1
            if not subs:
                del self._subscriptions[subscription.user_id]
                self._user_ids = None
        leftover = subscription.close()
        if leftover and subscription.user_id not in self._subscriptions:
            # Claimed for this stream but never sent: make it deliverable again.
            self._to_release.extend(n.pk for n in leftover)
            self.wake()

    def wake(self) -> None:
        """Poll now instead of at the end of the interval."""
        self.stats.wakes += 1
        self._wake.set()

    async def run(self, func: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a database function in the hub's worker thread."""
        return await self._worker.run(func, *args, **kwargs)

    async def aclose(self) -> None:
        """End every subscription, stop the poll, and close the worker's database connection."""
        for subs in list(self._subscriptions.values()):
            for subscription in list(subs):
                self.unsubscribe(subscription)
        await self._authenticator.aclose()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._worker.aclose()

    # The poll.

    async def _poll(self) -> None:
        outage = _Outage("Notification poll")
        while True:
            loop = asyncio.get_running_loop()
            helpers = [
                loop.create_task(self._watcher.run()),
                # A task of its own: the poll's timing does not wait for a check.
                loop.create_task(self._check_sessions_regularly()),
            ]
            try:
                while self._subscriptions or self._to_release:
                    again = False
                    started = time.monotonic()
                    try:
                        again = await self._tick()
                    except Exception:
                        self.stats.errors += 1
                        outage.failed()
                    else:
                        outage.recovered()
                    if not again:
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(conf.poll_interval()):
                                await self._wake.wait()
                        # A burst of wake-ups is claimed together, not a query each.
                        gap = max(MIN_POLL_GAP, 2 * self._claim_seconds)
                        await asyncio.sleep(max(0.0, started + gap - time.monotonic()))
                    self._wake.clear()
            finally:
                for helper in helpers:
                    helper.cancel()
                for helper in helpers:
                    with contextlib.suppress(asyncio.CancelledError):
                        await helper
            # Idle: hand the connections back until the next stream opens.
            await self._worker.close_connection()
            if not self._subscriptions and not self._to_release:
                return

    async def _check_sessions_regularly(self) -> None:
        outage = _Outage("Session check")
        while True:
            await asyncio.sleep(conf.session_check_interval())
            if not self._subscriptions:
                continue
            try:
                await self._check_sessions()
                keep_long_lived_out_of_gc()
            except Exception:
                self.stats.errors += 1
                outage.failed()
            else:
                outage.recovered()

    async def _check_sessions(self) -> None:
        for stale in sweep_unstarted(self._unstarted):
            self.unsubscribe(stale)
        # Only what is checked now: a stream that opens meanwhile was authenticated just now.
        checked = [s for subs in self._subscriptions.values() for s in subs]
        for ended in await self._session_checker.ended(checked):
            self.stats.sessions_ended += 1
            self.unsubscribe(ended)

    async def _tick(self) -> bool:
        """Claim and fan out once; return True when there may be more to claim at once."""
        self.stats.ticks += 1
        started = self.stats.last_tick = time.monotonic()
        queries_before = self.stats.queries
        try:
            return await self._claim_and_release()
        finally:
            self.stats.last_tick_queries = self.stats.queries - queries_before
            self.stats.last_tick_duration = time.monotonic() - started

    async def _claim_and_release(self) -> bool:
        if self._to_release:
            ids, self._to_release = self._to_release, []
            try:
                self.stats.released += await self.run(queries.release, ids)
            except BaseException:
                self._to_release.extend(ids)
                raise
        if not self._subscriptions:
            return False
        if self._user_ids is None:
            # Rebuilt only when a user's first stream opens or last one closes.
            self._user_ids = frozenset(self._subscriptions)
        user_ids, window = self._user_ids, conf.recent_window()

        def claim() -> tuple[list[Notification], float]:
            started = time.monotonic()
            claimed = queries.claim_pending(user_ids, window=window, limit=CLAIM_LIMIT)
            return claimed, time.monotonic() - started

        claimed, self._claim_seconds = await self.run(claim)
        self.stats.claimed += len(claimed)
        # A row whose user's last stream closed while the claim ran goes back.
        self._to_release.extend(n.pk for n in self.deliver(claimed))
        return len(claimed) >= CLAIM_LIMIT or bool(self._to_release)
