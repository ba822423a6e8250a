"""The hub: one per event loop, it reads every new notification once and hands each to the
open streams of its user.

A stream subscribes its user to the hub of its event loop. While anyone is subscribed, the hub
polls: it reads the rows above its cursor, every user's (one query, by primary key), and passes
them on in id order behind the holes that may still fill (`horizon`); the rows of users with a
stream here are fetched, claimed where undispatched, and handed to each of their streams that
subscribed before they passed. A user whose first stream opens here also gets the recent
undispatched rows from before (a catch-up claim). It polls when woken (a notification saved in
this process, a change watcher) and at least once a poll interval; and it runs the regular
session check that ends the streams whose sessions ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import timedelta
from typing import NamedTuple, ParamSpec, TypeVar

from django.db import connections
from django.utils import timezone

from .. import conf, queries
from ..models import Notification
from . import worker
from .admission import StreamRefused, check_caps, sweep_unstarted
from .authentication import Authenticator
from .change_events import ChangeEvent
from .change_feed import ChangeFeed
from .gcfreeze import freeze_new_objects, keep_long_lived_out_of_gc
from .horizon import Horizon, Row
from .keepalives import Keepalives
from .session_checks import SessionChecker
from .stats import HubStats
from .subscription import Subscription
from .watchers import ChangeWatcher
from .worker import Worker

logger = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

# Rows claimed and handed to the streams per poll. Smaller than queries.SCAN_LIMIT: the
# streams write one batch while the worker claims the next, and the first of a broadcast's
# rows go out before the last are claimed.
HAND_BATCH = 2500

# Least seconds between two polls, so a burst of wake-ups is read in few queries; after a poll
# whose queries took long (a large burst), twice their duration.
MIN_POLL_GAP = 0.01

# Most seconds between two reads of the change log while nothing wakes the hub: a safety net
# for a wake-up missed (a LISTEN connection that dropped and is being reopened), short enough
# that a missed one still reaches the streams within seconds, long enough that an idle process
# stays under two queries a second (a scan a second, a session check every two, this).
CHANGES_FALLBACK = 3.0

# Seconds between two passes over the streams that ask the quiet ones for a keepalive (at
# most: a shorter NOTIFICATIONS_KEEPALIVE makes them more often). A keepalive goes out after
# NOTIFICATIONS_KEEPALIVE quiet seconds, at most this much later. Short, so a pass sends few
# keepalives at once; a pass looks only at the streams that are due (keepalives.py).
KEEPALIVE_PASS = 0.25

# Seconds between two polls while a hole holds rows back, or the start is not settled yet:
# a hole whose transaction rolled back sends no NOTIFY.
HOLE_CHECK_INTERVAL = 0.05


class Read(NamedTuple):
    """What a poll read: new rows, and on PostgreSQL the writers and what fills the holes."""

    rows: list[Row]
    refilled: list[Row]
    # None when there was no hole to look at (SQLite never has any).
    writers: frozenset[str] | None
    seconds: float
    # Whether more rows may follow the scan's last: read again at once.
    more: bool


def _read(after: int, holes: Sequence[tuple[int, int]], holes_can_fill: bool) -> Read:
    """Scan above `after`; if there are holes, read the writers, then the holes again.

    In that order: a hole found by this scan was allocated before it, so a transaction that
    can still commit it is among the writers read after it; and what commits before the holes
    are read again is seen. The new holes are the gaps in this scan's ids.
    """
    started = time.monotonic()
    rows = queries.scan(after, queries.SCAN_LIMIT)
    more = queries.scan_has_more(after, queries.SCAN_LIMIT, rows)
    ranges = list(holes)
    if holes_can_fill:
        previous = after
        for pk, _ in rows:
            if pk > previous + 1:
                ranges.append((previous + 1, pk - 1))
            previous = pk
    if not ranges:
        return Read(rows, [], None, time.monotonic() - started, more)
    writers = queries.writers()
    refilled = queries.read_ranges(ranges)
    return Read(rows, refilled, writers, time.monotonic() - started, more)


class Handed(NamedTuple):
    """Rows fetched to be handed to streams, and the ids this process claimed among them."""

    caught_up: list[Notification]
    rows: list[Notification]
    claimed: frozenset[int]
    seconds: float


def _fetch(catch_up: Mapping[int, tuple[int, int]], window: float, ids: Sequence[int]) -> Handed:
    started = time.monotonic()
    since = timezone.now() - timedelta(seconds=window)
    caught_up = queries.catch_up(catch_up, since)
    fetched = queries.deliverable(ids) if ids else queries.Deliverable([], frozenset())
    claimed = frozenset(n.pk for n in caught_up) | fetched.claimed
    return Handed(caught_up, fetched.rows, claimed, time.monotonic() - started)


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
    """Read new notifications for the streams of one event loop and hand them out."""

    def __init__(self) -> None:
        self.stats = HubStats()
        self._subscriptions: dict[int, set[Subscription]] = {}
        self._stream_count = 0
        # Seconds the last poll's queries took in the worker (not waiting for it).
        self._query_seconds = 0.0
        # Subscriptions whose stream may not have started yet (see admission.sweep_unstarted).
        self._unstarted: set[Subscription] = set()
        self._keepalives = Keepalives()
        self._to_release: list[int] = []
        # The cursor, created by the first poll after the poll starts (None while stopped).
        self._horizon: Horizon | None = None
        # Set once the cursor has started (every subscription has its horizon), and once its
        # start is settled (Horizon.ready): replays and catch-ups wait for the latter.
        self._started = asyncio.Event()
        self._settled = asyncio.Event()
        # Users whose first stream here opened since the last catch-up, with that stream's
        # cursor and the position then: their catch-up takes the rows in between (above the
        # position, rows come live).
        self._new_users: dict[int, tuple[int, int | None]] = {}
        # Rows this hub claimed and handed out, while a stream still holds them: only those
        # are released when their stream closes unsent (another process's claim is theirs).
        self._claimed_here: weakref.WeakSet[Notification] = weakref.WeakSet()
        # Rows that passed the position (or filled a late hole) for users with a stream,
        # still to be fetched and handed out; kept when that fails, for the next poll.
        self._to_hand: list[Row] = []
        self._late_to_hand: list[Row] = []
        # The change log (read and deleted notifications): read at a poll that a wake-up
        # caused, at every poll while wake-ups may be missed, and every CHANGES_FALLBACK.
        self._changes = ChangeFeed()
        self._changes_due = True
        self._next_changes_read = 0.0
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

    @property
    def position(self) -> int | None:
        """The id up to which every row is resolved (None until the poll has read it)."""
        return None if self._horizon is None else self._horizon.position

    @property
    def pending_ids(self) -> int:
        """Ids not visible yet that hold rows back."""
        return 0 if self._horizon is None else self._horizon.pending_ids

    @property
    def late_ids(self) -> int:
        """Ids given up on that are still watched."""
        return 0 if self._horizon is None else self._horizon.late_ids

    def check_admission(self, user_id: int) -> None:
        """Raise StreamRefused if a new stream of this user would exceed a cap."""
        try:
            check_caps(len(self._subscriptions.get(user_id, ())), self._stream_count)
        except StreamRefused:
            self.stats.refused += 1
            raise

    def admit(self, user_id: int, session_key: str, *, after: int | None = None) -> Subscription:
        """Subscribe a new stream of the user, or raise StreamRefused if a cap is reached."""
        self.check_admission(user_id)
        return self.subscribe(user_id, session_key, after=after)

    async def authenticate(self, session_key: str) -> int | None:
        """Return the id of the user logged in with this session key, or None.

        Streams that open while a check runs are checked together in the next one. Raise
        TimeoutError when the database does not answer within DATABASE_TIMEOUT.
        """
        return await self._authenticator.authenticate(session_key)

    async def placed(self, subscription: Subscription) -> None:
        """Wait until the subscription has its horizon: what commits after comes live.

        Only the streams that open as the poll starts wait, for its first query. Raise
        TimeoutError when the database does not answer within DATABASE_TIMEOUT.
        """
        if subscription.horizon is None:
            async with asyncio.timeout(worker.DATABASE_TIMEOUT):
                await self._started.wait()

    async def replay(
        self, subscription: Subscription, after_id: int, limit: int
    ) -> list[Notification]:
        """Return the user's notifications after `after_id`, up to the subscription's horizon.

        What comes after the horizon comes live, so a resumed stream never jumps a hole. What
        the replay claims and its stream will not send (it gave up waiting) is released. Raise
        TimeoutError when the database does not answer within DATABASE_TIMEOUT.
        """
        abandoned = False

        def release_if_abandoned(done: asyncio.Future[queries.Shown]) -> None:
            # Runs when the query ends, even if the stream gave up waiting (timeout, client
            # gone): what it claimed then reached nobody.
            if done.cancelled() or done.exception() is not None:
                return
            if abandoned and done.result().claimed:
                self._to_release.extend(n.pk for n in done.result().claimed)
                self.wake()

        try:
            async with asyncio.timeout(worker.DATABASE_TIMEOUT):
                await self._settled.wait()
                up_to = subscription.horizon
                assert up_to is not None  # set for every subscription once settled
                query = asyncio.ensure_future(
                    self.run(queries.replay, subscription.user_id, after_id, up_to, limit)
                )
                query.add_done_callback(release_if_abandoned)
                shown = await asyncio.shield(query)
        except BaseException:
            abandoned = True
            raise
        return shown.rows

    def subscribe(
        self, user_id: int, session_key: str, *, after: int | None = None
    ) -> Subscription:
        """Start receiving the user's notifications; the poll starts with the first subscriber.

        `after`: the stream's cursor; rows up to it are not handed to it live.
        """
        subscription = Subscription(user_id, session_key, after=after)
        subscription.horizon = self.position
        if user_id not in self._subscriptions:
            self._subscriptions[user_id] = set()
            self._new_users[user_id] = (after or 0, subscription.horizon)
        self._subscriptions[user_id].add(subscription)
        self._unstarted.add(subscription)
        self._keepalives.add(subscription)
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
                self._new_users.pop(subscription.user_id, None)
        leftover = [n for n in subscription.close() if n in self._claimed_here]
        if leftover and subscription.user_id not in self._subscriptions:
            # Claimed here for this stream but never sent: make it deliverable again.
            self._to_release.extend(n.pk for n in leftover)
            self.wake()

    def wake(self) -> None:
        """Poll now instead of at the end of the interval."""
        self.stats.wakes += 1
        self._changes_due = True
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
                loop.create_task(self._keep_alive_regularly()),
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
                            async with asyncio.timeout(self._interval()):
                                await self._wake.wait()
                        # A burst of wake-ups is read together, not a query each.
                        gap = max(MIN_POLL_GAP, 2 * self._query_seconds)
                        await asyncio.sleep(max(0.0, started + gap - time.monotonic()))
                    self._wake.clear()
            finally:
                for helper in helpers:
                    helper.cancel()
                for helper in helpers:
                    with contextlib.suppress(asyncio.CancelledError):
                        await helper
                self._stop_reading()
            # Idle: hand the connections back until the next stream opens.
            await self._worker.close_connection()
            if not self._subscriptions and not self._to_release:
                return

    def _interval(self) -> float:
        interval = conf.poll_interval()
        horizon = self._horizon
        if horizon is not None and (horizon.pending_ids or not horizon.ready):
            return min(interval, HOLE_CHECK_INTERVAL)
        return interval

    def _stop_reading(self) -> None:
        # With no stream left, nothing needs the cursor: the next poll starts afresh.
        if not self._subscriptions:
            self._horizon = None
            self._started.clear()
            self._settled.clear()
            self._new_users.clear()
            self._to_hand.clear()
            self._late_to_hand.clear()
            self._changes.reset()
            self._changes_due = True
            self._keepalives.clear()  # closed subscriptions only

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

    async def _keep_alive_regularly(self) -> None:
        """Ask each stream quiet for NOTIFICATIONS_KEEPALIVE seconds for a keepalive comment.

        One pass for the streams that are due (see keepalives.py), where a timer per stream
        woke the event loop once per stream: the keepalives of a pass go out in one round of
        writes.
        """
        while True:
            keepalive = conf.keepalive()
            await asyncio.sleep(min(KEEPALIVE_PASS, keepalive / 4))
            self._keepalives.ask(time.monotonic(), keepalive)

    async def _check_sessions(self) -> None:
        for stale in sweep_unstarted(self._unstarted):
            self.unsubscribe(stale)
        # Only what is checked now: a stream that opens meanwhile was authenticated just now.
        checked = [s for subs in self._subscriptions.values() for s in subs]
        for ended in await self._session_checker.ended(checked):
            self.stats.sessions_ended += 1
            self.unsubscribe(ended)

    async def _tick(self) -> bool:
        """Read and hand out once; return True when there may be more to read at once."""
        self.stats.ticks += 1
        started = self.stats.last_tick = time.monotonic()
        queries_before = self.stats.queries
        try:
            return await self._read_and_hand_out()
        finally:
            self.stats.last_tick_queries = self.stats.queries - queries_before
            self.stats.last_tick_duration = time.monotonic() - started

    async def _read_and_hand_out(self) -> bool:
        if self._to_release:
            ids, self._to_release = self._to_release, []
            try:
                self.stats.released += await self.run(queries.release, ids)
            except BaseException:
                self._to_release.extend(ids)
                raise
        if not self._subscriptions:
            return False
        horizon = self._horizon or await self._start()
        if not horizon.ready:
            horizon.settle(await self.run(queries.writers), time.monotonic())
            if horizon.ready:
                self._settled.set()
        if self._to_hand:
            # Rows read earlier still wait for their batch: claim the next one before reading
            # more. Asked for now, the claim runs while the streams write the last batch; the
            # answer to a read would wait for them, and the claim after it too.
            self._query_seconds = await self._hand_out()
            return True
        holes = [(hole.low, hole.high) for hole in horizon.holes]
        read = await self.run(_read, horizon.max_seen, holes, horizon.holes_can_fill)
        now = time.monotonic()
        horizon.add_scanned(read.rows, now)
        late = horizon.fill(read.refilled, read.writers) if read.writers is not None else []
        passed = horizon.advance(now)
        self.stats.rows_read += len(read.rows) + len(read.refilled)
        # Rows of users without a stream here cost this read alone.
        self._to_hand.extend(row for row in passed if row[1] in self._subscriptions)
        self._late_to_hand.extend(row for row in late if row[1] in self._subscriptions)
        seconds = read.seconds + await self._hand_out()
        more_changes = False
        # After the notifications, once every row read is handed out (the rest of a large
        # batch goes at the next polls, at once): an event's unread count covers them.
        if self._changes_wanted() and not self._to_hand:
            started = time.monotonic()
            self._changes_due = False
            self._next_changes_read = started + CHANGES_FALLBACK
            try:
                changed = await self.run(
                    self._changes.read, frozenset(self._subscriptions), up_to=horizon.position
                )
            except BaseException:
                self._changes_due = True
                raise
            self._hand_change_events(changed.events)
            # A wake-up that came during the read has set _changes_due again: keep it.
            more_changes = changed.more
            self._changes_due = self._changes_due or more_changes
            seconds += time.monotonic() - started
        self._query_seconds = seconds
        return read.more or bool(self._to_release or self._to_hand) or more_changes

    def _changes_wanted(self) -> bool:
        """Whether this poll reads the change log too.

        A change that commits wakes the hubs like a new row does (its insert trigger NOTIFYs
        on PostgreSQL; SQLite's data_version moves; a change made in this process wakes its
        hubs itself), so an idle poll that nothing woke costs the one scan of notifications.
        While wake-ups may be missed (PostgreSQL without a working LISTEN, another database),
        every poll reads it.
        """
        if self._changes_due or time.monotonic() >= self._next_changes_read:
            return True
        vendor = connections[queries.database_alias()].vendor
        return not (vendor == "sqlite" or (vendor == "postgresql" and self.listening))

    async def _start(self) -> Horizon:
        """Start the cursor at the newest id; streams subscribed so far take it as horizon.

        The change log's cursor starts here too, before any stream counts as placed: a read
        or deletion that commits once a stream is open is read after it, even one that
        commits before the poll first reads the log.
        """
        start = await self.run(queries.start)
        await self.run(self._changes.start)
        vendor = connections[queries.database_alias()].vendor
        horizon = self._horizon = Horizon(
            start.newest_id,
            time.monotonic(),
            holes_can_fill=vendor == "postgresql",
            writers=start.writers,
            keep_late=conf.recent_window(),
        )
        for subs in self._subscriptions.values():
            for subscription in subs:
                if subscription.horizon is None:
                    subscription.horizon = horizon.position
        for user_id, (after, up_to) in self._new_users.items():
            if up_to is None:
                self._new_users[user_id] = (after, horizon.position)
        self._started.set()
        if horizon.ready:
            self._settled.set()
        return horizon

    async def _hand_out(self) -> float:
        """Fetch and hand out what passed, what filled late, and new users' catch-ups.

        Return the seconds the queries took.
        """
        catch_up: dict[int, tuple[int, int]] = {}
        if self._settled.is_set():
            catch_up = {
                user_id: (after, up_to)
                for user_id, (after, up_to) in self._new_users.items()
                if up_to is not None
            }
            for user_id in catch_up:
                del self._new_users[user_id]
        # A batch at a time: the streams send one batch while the worker claims the next.
        normal, late = self._to_hand[:HAND_BATCH], self._late_to_hand
        if not (normal or late or catch_up):
            return 0.0
        ids = [pk for pk, _ in late] + [pk for pk, _ in normal]
        try:
            handed = await self.run(_fetch, catch_up, conf.recent_window(), ids)
        except BaseException:
            for user_id, up_to in catch_up.items():
                if user_id in self._subscriptions:
                    self._new_users.setdefault(user_id, up_to)
            raise
        self._to_hand, self._late_to_hand = self._to_hand[len(normal) :], []
        self.stats.claimed += len(handed.claimed)
        for notification in [*handed.caught_up, *handed.rows]:
            if notification.pk in handed.claimed:
                self._claimed_here.add(notification)
        late_ids = {pk for pk, _ in late}
        nobody = self._hand(handed.caught_up, to_every_stream=True)
        nobody += self._hand((n for n in handed.rows if n.pk in late_ids), to_every_stream=True)
        nobody += self._hand(
            (n for n in handed.rows if n.pk not in late_ids), to_every_stream=False
        )
        # Claimed here for a user whose last stream closed meanwhile: it goes back.
        self._to_release.extend(n.pk for n in nobody if n.pk in handed.claimed)
        if handed.rows or handed.caught_up:
            # What the batch made lives until its streams have sent it (a broadcast: tens of
            # thousands of objects): out of the full collections' sight (gcfreeze.py).
            freeze_new_objects()
        return handed.seconds

    def _hand_change_events(self, events: Mapping[int, list[ChangeEvent]]) -> None:
        """Push each user's read and deleted events to every stream of theirs."""
        for user_id, user_events in events.items():
            for subscription in self._subscriptions.get(user_id, ()):
                for event in user_events:
                    subscription.push(event)
            self.stats.change_events += len(user_events)

    def _hand(
        self, notifications: Iterable[Notification], *, to_every_stream: bool
    ) -> list[Notification]:
        """Push each notification to its user's streams; return those no stream took.

        A row passing the position goes to the streams that subscribed before it passed; a
        late row or a catch-up to every stream of the user; either only where it is above the
        stream's cursor (and a stream leaves out what its replay sent).
        """
        nobody = []
        for notification in notifications:
            taken = False
            for subscription in self._subscriptions.get(notification.user_id, ()):
                if (
                    subscription.lacks(notification.pk)
                    if to_every_stream
                    else subscription.wants(notification.pk)
                ):
                    subscription.push(notification)
                    taken = True
            if taken:
                self.stats.delivered += 1
            else:
                nobody.append(notification)
        return nobody
