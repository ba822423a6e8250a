"""The process-wide poller: one claim query at a time for every stream in the process.

A stream subscribes its user to the hub of its event loop. While anyone is subscribed, the hub
claims the recent undispatched notifications of all subscribed users in one query, and hands
each claimed row to every subscription of its user. It polls when woken (a notification saved
in this process, PostgreSQL's NOTIFY, a change in SQLite's data_version) and at least once a
poll interval. It also checks, in one batch, that the sessions behind the streams are still
valid, and ends the streams whose sessions are not; and it caps streams per user and process.

All database work runs in one worker thread that the hub owns, so a process holds one
database connection for its streams however many are open (plus, on PostgreSQL, the LISTEN
connection, which lives on the event loop), and no stream touches the database in its own
request thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
import logging
import time
import weakref
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

from django.db import DatabaseError, connection, transaction

from . import conf, services
from .models import Notification
from .sessions import DATA_VERSION, SessionCache, session_users

logger = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

# Rows claimed per query; a larger backlog is claimed by the next queries without a pause.
CLAIM_LIMIT = 1000

# The channel the insert trigger NOTIFYs on PostgreSQL (migration 0003).
POSTGRES_CHANNEL = "notifications_created"

# Least seconds between two polls, so a burst of wake-ups is claimed in few queries; after a
# claim query that took long (a large backlog in the recent window), twice its duration.
MIN_POLL_GAP = 0.01

# Seconds of silence after which the LISTEN connection is checked with a query.
LISTEN_CHECK_INTERVAL = 60.0

# Seconds a stream waits for the database (authentication, replay) before giving up, and the
# statement timeout of the hub's PostgreSQL connection.
DATABASE_TIMEOUT = 10

_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub] = weakref.WeakKeyDictionary()


def get_hub() -> Hub:
    """Return the hub of the running event loop, creating it on first use."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        hub = _hubs[loop] = Hub()
    return hub


async def share(notifications: list[Notification]) -> None:
    """Send rows claimed outside the poll (by a page render) to their users' open streams.

    A claim by anyone else than the poll would otherwise keep those rows from the streams the
    user already has open in this process. A no-op where no stream was ever opened.
    """
    hub = _hubs.get(asyncio.get_running_loop())
    if hub is not None:
        hub.deliver(notifications)


def notifications_created(using: str | None = None) -> None:
    """Wake this process's pollers once the current transaction commits.

    `Notification.save()` triggers this itself (a post_save receiver); code that inserts rows
    without save() (`bulk_create`, raw SQL) calls it after the insert. Other processes learn of
    new rows through PostgreSQL's NOTIFY (an insert trigger), SQLite's data_version, or at the
    latest at their next poll.
    """
    transaction.on_commit(wake_local_hubs, using=using, robust=True)


def wake_local_hubs() -> None:
    """Make every hub of this process poll now; safe to call from any thread."""
    for loop, hub in list(_hubs.items()):
        with contextlib.suppress(RuntimeError):  # a loop that is closed or closing
            loop.call_soon_threadsafe(hub.wake)


def process_stats() -> dict[str, Any]:
    """The counters of every hub in this process, summed; for health checks and metrics."""
    hubs = [hub for loop, hub in list(_hubs.items()) if not loop.is_closed()]
    ticks = [h.stats.last_tick for h in hubs if h.stats.last_tick is not None]
    return {
        "streams": sum(h.stream_count for h in hubs),
        "users": sum(len(h._subscriptions) for h in hubs),
        "ticks": sum(h.stats.ticks for h in hubs),
        "queries": sum(h.stats.queries + h.stats.session_queries for h in hubs),
        "claimed": sum(h.stats.claimed for h in hubs),
        "delivered": sum(h.stats.delivered for h in hubs),
        "released": sum(h.stats.released for h in hubs),
        "sessions_ended": sum(h.stats.sessions_ended for h in hubs),
        "refused": sum(h.stats.refused for h in hubs),
        "wakes": sum(h.stats.wakes for h in hubs),
        "change_checks": sum(h.stats.change_checks for h in hubs),
        "errors": sum(h.stats.errors for h in hubs),
        "last_tick_duration": max((h.stats.last_tick_duration for h in hubs), default=0.0),
        # time.monotonic() of the most recent poll of any hub, None before the first.
        "last_tick": max(ticks) if ticks else None,
        "polling": any(h.polling for h in hubs),
    }


def _close_connection() -> None:
    # Looked up in the thread that runs it: `connection.close` evaluated by the caller would
    # be the calling thread's connection, which Django refuses to close from another thread.
    connection.close()


# Seconds between two full garbage collections of everything; see _keep_long_lived_out_of_gc.
GC_THAW_INTERVAL = 600.0
_next_thaw = 0.0


def _keep_long_lived_out_of_gc() -> None:
    """Keep CPython's full garbage collections short while thousands of streams are open.

    Each open stream holds a few hundred objects (its request, response, generator and
    Twisted's side), all long-lived. A full collection traverses every one of them: measured
    at 10,000 streams on Python 3.11, about 2 million objects and 1.3 to 1.8 s during which no
    stream of the process moves. Freezing them (gc.freeze()) after each session check takes
    them out of the collector's sight, so collections only look at what is newer. Garbage in
    reference cycles among frozen objects (a stream closed since) waits for the thaw: every
    GC_THAW_INTERVAL seconds everything is unfrozen and collected once.
    """
    global _next_thaw
    if not conf.gc_freeze():
        return
    now = time.monotonic()
    if now >= _next_thaw:
        if _next_thaw:
            gc.unfreeze()
            gc.collect()
        _next_thaw = now + GC_THAW_INTERVAL
    gc.freeze()


def _data_version() -> int:
    with connection.cursor() as cursor:
        cursor.execute(DATA_VERSION)
        row = cursor.fetchone()
    return int(row[0])


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


class StreamRefused(Exception):
    """A new stream would exceed the per-user or the per-process cap."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


# Seconds after which a place reserved for a stream whose response never started is freed.
UNSTARTED_TIMEOUT = 30


class Subscription:
    """One stream's place in the hub: the notifications claimed for it, waiting to be sent."""

    def __init__(self, user_id: int, session_key: str) -> None:
        self.user_id = user_id
        self.session_key = session_key
        self.closed = False
        # Set when the stream's generator runs; see Hub._sweep_unstarted().
        self.started = False
        self.created = time.monotonic()
        self._items: deque[Notification] = deque()
        self._ready = asyncio.Event()

    def push(self, notification: Notification) -> None:
        if not self.closed:
            self._items.append(notification)
            self._ready.set()

    def close(self) -> list[Notification]:
        """End the subscription; return what it held and will now never send."""
        self.closed = True
        self._ready.set()
        return self.drain()

    def drain(self) -> list[Notification]:
        items = list(self._items)
        self._items.clear()
        return items

    async def next_batch(self, idle: float) -> list[Notification] | None:
        """Return what arrived, waiting for it up to `idle` seconds ([] if nothing came).

        Return None once the subscription is closed.
        """
        if not self._items and not self.closed:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a
            # cancellation that lands just after the event is set, and the stream would
            # outlive its client.
            try:
                async with asyncio.timeout(idle):
                    await self._ready.wait()
            except TimeoutError:
                return []
        self._ready.clear()
        if self._items:
            return self.drain()
        return None if self.closed else []


@dataclass
class HubStats:
    """Counters for tests, benchmarks and operators."""

    ticks: int = 0
    queries: int = 0
    # Queries of the last complete poll (claim and release; session checks are apart).
    last_tick_queries: int = 0
    # Queries of the session checks and authentications.
    session_queries: int = 0
    claimed: int = 0
    # Notifications handed to at least one stream (by the poll, a replay or a page render).
    delivered: int = 0
    released: int = 0
    # Streams refused by the per-user or per-process cap.
    refused: int = 0
    sessions_ended: int = 0
    # Wake-ups: by a save or send in this process, by PostgreSQL's NOTIFY, by SQLite's
    # data_version; and how often data_version was read (not counted in `queries`).
    wakes: int = 0
    change_checks: int = 0
    errors: int = 0
    last_tick: float | None = field(default=None)
    # Seconds the last complete poll took.
    last_tick_duration: float = 0.0


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
        # Subscriptions whose stream may not have started yet (see _sweep_unstarted).
        self._unstarted: set[Subscription] = set()
        self._session_cache = SessionCache()
        self._authenticating: dict[str, list[asyncio.Future[int | None]]] = {}
        self._auth_task: asyncio.Task[None] | None = None
        self._to_release: list[int] = []
        self._executor: ThreadPoolExecutor | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        # True while a PostgreSQL LISTEN connection waits for NOTIFYs.
        self.listening = False

    # Streams' side.

    @property
    def polling(self) -> bool:
        """True while the poll runs (it stops when no stream is open)."""
        return self._task is not None and not self._task.done()

    @property
    def stream_count(self) -> int:
        return self._stream_count

    def check_admission(self, user_id: int) -> None:
        """Raise StreamRefused if a new stream of this user would exceed a cap."""
        per_user = conf.max_streams_per_user()
        if len(self._subscriptions.get(user_id, ())) >= per_user:
            self.stats.refused += 1
            raise StreamRefused(
                f"Too many open streams for this account: at most {per_user} per server "
                "process. Close other tabs or windows of this site, or try again later.",
                retry_after=10,
            )
        if self._stream_count >= conf.effective_max_streams():
            self.stats.refused += 1
            raise StreamRefused(
                "This server holds as many streams as it can; try again shortly.",
                retry_after=10,
            )

    def admit(self, user_id: int, session_key: str) -> Subscription:
        """Subscribe a new stream of the user, or raise StreamRefused if a cap is reached."""
        self.check_admission(user_id)
        return self.subscribe(user_id, session_key)

    async def authenticate(self, session_key: str) -> int | None:
        """Return the id of the user logged in with this session key, or None.

        Streams that open while a check runs are checked together in the next one, so a
        thousand browsers reconnecting at once (after a restart) cost a few queries, not a
        thousand. Raise TimeoutError when the database does not answer within
        DATABASE_TIMEOUT.
        """
        answer: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self._authenticating.setdefault(session_key, []).append(answer)
        if self._auth_task is None or self._auth_task.done():
            self._auth_task = asyncio.get_running_loop().create_task(
                self._authenticate_waiting(), context=contextvars.Context()
            )
        async with asyncio.timeout(DATABASE_TIMEOUT):
            return await answer

    async def _authenticate_waiting(self) -> None:
        while self._authenticating:
            waiting, self._authenticating = self._authenticating, {}
            try:
                users = await self.check(session_users, list(waiting))
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

    async def replay(
        self, subscription: Subscription, after_id: int, limit: int
    ) -> list[Notification]:
        """Return the notifications of the subscription's user after `after_id`.

        What the replay claims also goes to the user's other streams. Raise TimeoutError when
        the database does not answer within DATABASE_TIMEOUT.
        """
        abandoned = False

        def share(done: asyncio.Future[services.Shown]) -> None:
            # Runs when the query ends, even if this stream gave up waiting (timeout, client
            # gone): what it claimed still reaches the user's other streams, or is released.
            if done.cancelled() or done.exception() is not None:
                return
            nobody = self.deliver(done.result().claimed, skip=subscription)
            if abandoned and nobody:
                self._to_release.extend(n.pk for n in nobody)
                self.wake()

        query = asyncio.ensure_future(
            self.run(services.replay, subscription.user_id, after_id, limit)
        )
        query.add_done_callback(share)
        try:
            async with asyncio.timeout(DATABASE_TIMEOUT):
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
        return await self._in_worker(lambda: self._call(func, args, kwargs))

    async def check(self, func: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a session check or authentication in the hub's worker thread.

        The same thread as the claims, queued with them: measured at 10,000 streams, a second
        thread for checks competed with the event loop and the claims for the GIL and made
        delivery slower (PostgreSQL, admin form, p99 21.8 ms with one thread, 192-277 ms with
        two). Counted apart from the poll's queries.
        """
        return await self._in_worker(lambda: self._call(func, args, kwargs, checker=True))

    async def _in_worker(self, call: Callable[[], T]) -> T:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="notifications")
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def _close_connections(self) -> None:
        # Queued behind whatever the thread still runs, so nothing reopens it after.
        if self._executor is not None:
            with contextlib.suppress(DatabaseError):
                await self.run(_close_connection)

    async def aclose(self) -> None:
        """End every subscription, stop the poll, and close the worker's database connection."""
        for subs in list(self._subscriptions.values()):
            for subscription in list(subs):
                self.unsubscribe(subscription)
        if self._auth_task is not None:
            self._auth_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._auth_task
            self._auth_task = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._close_connections()
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None

    # The worker thread.

    def _call(self, func: Callable[..., T], args: Any, kwargs: Any, checker: bool = False) -> T:
        def count(execute: Callable[..., Any], sql: str, *params: Any) -> Any:
            if sql == DATA_VERSION:
                self.stats.change_checks += 1
            elif checker:
                self.stats.session_queries += 1
            else:
                self.stats.queries += 1
            return execute(sql, *params)

        try:
            if connection.connection is None:
                self._connect()
            with connection.execute_wrapper(count):
                return func(*args, **kwargs)
        except DatabaseError:
            # The next call opens a new connection rather than reusing a broken one.
            with contextlib.suppress(DatabaseError):
                connection.close()
            raise

    @staticmethod
    def _connect() -> None:
        connection.ensure_connection()
        if connection.vendor == "postgresql":
            # A lock held elsewhere (a migration, a long transaction) must not stall every
            # stream of the process: the statement fails, and the poll tries again.
            with connection.cursor() as cursor:
                cursor.execute("SET statement_timeout = %s", [f"{DATABASE_TIMEOUT}s"])
                cursor.execute("SET lock_timeout = %s", [f"{DATABASE_TIMEOUT / 2}s"])

    # The poll.

    async def _poll(self) -> None:
        outage = _Outage("Notification poll")
        while True:
            loop = asyncio.get_running_loop()
            helpers = [
                loop.create_task(self._watch_for_changes()),
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
            await self._close_connections()
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
                _keep_long_lived_out_of_gc()
            except Exception:
                self.stats.errors += 1
                outage.failed()
            else:
                outage.recovered()

    async def _watch_for_changes(self) -> None:
        """Wake the poll when another process commits notifications (the poll still runs)."""
        try:
            if connection.vendor == "postgresql":
                await self._listen_postgresql()
            elif connection.vendor == "sqlite":
                await self._watch_sqlite()
        except Exception:
            # The poll alone still delivers, within its interval.
            logger.exception("Watching for new notifications failed")

    async def _listen_postgresql(self) -> None:
        import psycopg

        params = connection.get_connection_params()
        for django_only in ("context", "cursor_factory", "prepare_threshold"):
            params.pop(django_only, None)
        params.setdefault("connect_timeout", DATABASE_TIMEOUT)
        delay = 1.0
        while True:
            try:
                listener = await psycopg.AsyncConnection.connect(**params, autocommit=True)
                async with listener:
                    await listener.execute(f"LISTEN {POSTGRES_CHANNEL}")
                    self.listening = True
                    delay = 1.0
                    # Rows inserted while nobody listened: look now.
                    self.wake()
                    while True:
                        # A NOTIFY wakes the poll; a quiet minute makes sure the connection
                        # still answers (one dropped silently would otherwise never notify).
                        async for _ in listener.notifies(timeout=LISTEN_CHECK_INTERVAL):
                            self.wake()
                        async with asyncio.timeout(DATABASE_TIMEOUT):
                            await listener.execute("SELECT 1")
                        self.wake()  # in case a NOTIFY came with the check's answer
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
                async with asyncio.timeout(DATABASE_TIMEOUT):
                    version = await self.run(_data_version)
            except (DatabaseError, TimeoutError):
                version = None
            # A first reading (or the first after an error) wakes too: a commit just before
            # it would otherwise wait for the poll interval.
            if version is not None and version != last:
                self.wake()
            last = version
            await asyncio.sleep(interval)

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
                self.stats.released += await self.run(services.release, ids)
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
            claimed = services.claim_pending(user_ids, window=window, limit=CLAIM_LIMIT)
            return claimed, time.monotonic() - started

        claimed, self._claim_seconds = await self.run(claim)
        self.stats.claimed += len(claimed)
        # A row whose user's last stream closed while the claim ran goes back.
        self._to_release.extend(n.pk for n in self.deliver(claimed))
        return len(claimed) >= CLAIM_LIMIT or bool(self._to_release)

    def _sweep_unstarted(self) -> None:
        # A stream whose client left while the response was still in Django's middleware
        # never runs its generator, and Django never closes its body: free its place.
        stale = time.monotonic() - UNSTARTED_TIMEOUT
        for subscription in list(self._unstarted):
            if subscription.started or subscription.closed:
                self._unstarted.discard(subscription)
            elif subscription.created < stale:
                self._unstarted.discard(subscription)
                self.unsubscribe(subscription)

    async def _check_sessions(self) -> None:
        self._sweep_unstarted()
        checked = [s for subs in self._subscriptions.values() for s in subs]
        valid = await self.check(
            session_users, {s.session_key for s in checked}, cache=self._session_cache
        )
        # Only what was checked: a stream that opened meanwhile was authenticated just now.
        for subscription in checked:
            if (
                not subscription.closed
                and valid.get(subscription.session_key) != subscription.user_id
            ):
                self.stats.sessions_ended += 1
                self.unsubscribe(subscription)
