"""A process's reading of the change log: every read or deleted change once, late ones too.

The hub reads the log with a cursor on the id, like new notifications, with the same
bookkeeping of ids a scan skipped (`horizon.Horizon`): on PostgreSQL an id is allocated when a
change is inserted, not when it commits, so a change can become visible after one with a
higher id (a purge batch's DELETE that commits after a user marked something read). A skipped
id is read again at each poll until it fills, or until none of the transactions that were
writing to the log when it was found still writes (rolled back: it will never appear), or
KEEP_GAP seconds have passed.

Unlike notifications, changes are not held back behind those ids (the Horizon's hold-back is
0): each event is a set operation (these ids are read, these are gone) carrying the user's
unread count as read now, and needs no id order, so a late change goes out as soon as it is
seen. SQLite commits ids in order: there, nothing is skipped.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from .. import changes, conf
from ..models import Change
from .change_events import ChangeEvent, by_user
from .horizon import Horizon

# Changes read per poll; a larger backlog is read by the next polls without a pause.
SCAN_LIMIT = 1000

# Seconds a skipped id is read again at most.
KEEP_GAP = 60.0

# Ids below the newest at start that are looked at once for changes still to commit.
START_WINDOW = 1000

# Seconds between two prunes of the change log by this process.
PRUNE_INTERVAL = 60.0


@dataclass
class Read:
    """What one read of the log found for the users with streams."""

    events: dict[int, list[ChangeEvent]]
    # True when the scan stopped at SCAN_LIMIT: read again at once.
    more: bool


class ChangeFeed:
    """Read the change log for one hub; `read` runs in the hub's worker thread."""

    def __init__(self) -> None:
        # None until the first read, and again after reset().
        self.horizon: Horizon | None = None
        # Changes read whose events are not made yet.
        self._unsent: list[Change] = []
        self._next_prune = 0.0

    def reset(self) -> None:
        """Start again from the newest change (the hub's poll restarts after being idle)."""
        self.horizon = None
        self._unsent = []

    def read(
        self, users: Mapping[int, object] | Collection[int], *, up_to: int | None = None
    ) -> Read:
        """Read what changed since the last read; return the events for these users.

        `up_to`: the hub's position among notifications. The unread count an event carries
        counts the notifications up to it, those already handed to the streams: one above it
        comes after the event, and its `notification` event adds one for the browser.
        """
        now = time.monotonic()
        # First: a prune that fails (a lock held elsewhere) must not lose events made below.
        self._prune_now_and_then(now)
        horizon = self.horizon or self.start()
        found = {c.pk: c for c in changes.after(horizon.max_seen, SCAN_LIMIT)}
        horizon.add_scanned([(pk, 0) for pk in found], now)
        more = len(found) >= SCAN_LIMIT
        late: list[Change] = []
        if horizon.holes:
            # Writers first, then the rows: a writer that commits in between is in the rows.
            writers = changes.writers()
            refilled = changes.in_ranges([(hole.low, hole.high) for hole in horizon.holes])
            found.update((c.pk, c) for c in refilled)
            late_ids = {pk for pk, _ in horizon.fill([(c.pk, 0) for c in refilled], writers)}
            late = [c for c in refilled if c.pk in late_ids]
        self._unsent.extend(found[pk] for pk, _ in horizon.advance(now))
        self._unsent.extend(late)
        # Cleared only once the events are made: if counting fails, the next read sends them.
        events = self._events(self._unsent, users, up_to)
        self._unsent = []
        return Read(events, more)

    def start(self) -> Horizon:
        """Start the cursor at the newest change: what commits from now on is read.

        The hub calls this when its poll starts, before its streams count as open; a read
        starts it when nothing did.
        """
        now = time.monotonic()
        newest = changes.latest_id()
        out_of_order = changes.ids_can_commit_out_of_order()
        base = max(0, newest - START_WINDOW) if out_of_order else newest
        horizon = self.horizon = Horizon(
            base, now, holes_can_fill=out_of_order, hold_back=0, keep_late=KEEP_GAP
        )
        if base < newest:
            # The ids missing near the top may belong to changes still to commit; those
            # visible now are not news, and only the transactions writing now can add one.
            visible = changes.ids_between(base + 1, newest)
            horizon.add_scanned([(pk, 0) for pk in visible], now)
            horizon.fill([], changes.writers())
            horizon.advance(now)
        return horizon

    @staticmethod
    def _events(
        found: Iterable[Change],
        users: Mapping[int, object] | Collection[int],
        up_to: int | None,
    ) -> dict[int, list[ChangeEvent]]:
        wanted = users if isinstance(users, Mapping) else dict.fromkeys(users)
        merged = by_user(found, wanted)
        if not merged:
            return {}
        counts = changes.unread_counts(list(merged), up_to=up_to)
        events = {user: merged[user].events(counts[user]) for user in merged}
        return {user: e for user, e in events.items() if e}

    def _prune_now_and_then(self, now: float) -> None:
        if now >= self._next_prune:
            self._next_prune = now + min(PRUNE_INTERVAL, conf.change_retention())
            changes.prune()
