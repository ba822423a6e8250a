"""A process's reading of the change log: every read or deleted change once, late ones too.

The hub reads the log with a cursor on the id, like new notifications. On PostgreSQL an id is
allocated when a change is inserted, not when it commits, so a change can become visible after
one with a higher id (a purge batch's DELETE that commits after a user marked something read).
A scan that skipped an id keeps it as a *gap* and reads it again at each poll until it fills,
or until none of the transactions that were writing to the log when the gap was found still
writes (it was rolled back; the id will never appear), or KEEP_GAP seconds have passed.
Unlike notifications, changes need not reach the streams in id order: each event is a set
operation (these ids are read, these are gone) that carries the user's current unread count,
so a late change is passed on as soon as it is seen. SQLite commits ids in order: no gaps.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from .. import changes, conf
from ..models import Change
from .change_events import ChangeEvent, by_user

# Changes read per poll; a larger backlog is read by the next polls without a pause.
SCAN_LIMIT = 1000

# Seconds a gap is read again at most (the transaction that may fill it is that long).
KEEP_GAP = 60.0

# Changes below the newest at start that are looked at for gaps, once.
START_WINDOW = 1000

# Seconds between two prunes of the change log by this process.
PRUNE_INTERVAL = 60.0


@dataclass
class Gap:
    """Ids `low` to `high` (inclusive) skipped by a scan, which may still commit."""

    low: int
    high: int
    found: float
    # Who was writing to the log just after the gap was found; None until read.
    writers: frozenset[str] | None = None


@dataclass
class Read:
    """What one read of the log found for the users with streams."""

    events: dict[int, list[ChangeEvent]]
    # True when the scan stopped at SCAN_LIMIT: read again at once.
    more: bool


class ChangeFeed:
    """Read the change log for one hub; every method runs in the hub's worker thread."""

    def __init__(self) -> None:
        # The highest change id read so far; None until the first read.
        self.position: int | None = None
        self.gaps: list[Gap] = []
        self._next_prune = 0.0

    def reset(self) -> None:
        """Start again from the newest change (the hub's poll restarts after being idle)."""
        self.position = None
        self.gaps = []

    def read(self, users: Mapping[int, object] | Collection[int]) -> Read:
        """Read what changed since the last read; return the events for these users."""
        now = time.monotonic()
        if self.position is None:
            self._start(now)
            assert self.position is not None
        found = changes.after(self.position, SCAN_LIMIT)
        out_of_order = changes.ids_can_commit_out_of_order()
        for change in found:
            if out_of_order and change.pk > self.position + 1:
                self.gaps.append(Gap(self.position + 1, change.pk - 1, now))
            self.position = change.pk
        if self.gaps:
            found.extend(self._read_gaps(now))
        self._prune_now_and_then(now)
        wanted = users if isinstance(users, Mapping) else dict.fromkeys(users)
        merged = by_user(found, wanted)
        counts = changes.unread_counts(list(merged)) if merged else {}
        events = {user: merged[user].events(counts[user]) for user in merged}
        return Read({user: e for user, e in events.items() if e}, len(found) >= SCAN_LIMIT)

    def _start(self, now: float) -> None:
        self.position = changes.latest_id()
        if not changes.ids_can_commit_out_of_order() or not self.position:
            return
        # A change still to commit below the start: the ids missing near the top are gaps.
        low = max(1, self.position - START_WINDOW + 1)
        visible = {c.pk for c in changes.in_ranges([(low, self.position)])}
        for pk in range(low, self.position + 1):
            if pk not in visible:
                if self.gaps and self.gaps[-1].high == pk - 1:
                    self.gaps[-1].high = pk
                else:
                    self.gaps.append(Gap(pk, pk, now))
        if self.gaps:
            # Only what those writing now may still commit: anything else is settled.
            writers = changes.writers()
            if not writers:
                self.gaps = []
            for gap in self.gaps:
                gap.writers = writers
            # What was visible at start is not news; only what fills a gap from now on is.

    def _read_gaps(self, now: float) -> list[Change]:
        # Writers first, then the rows: a writer that commits in between is seen in the rows.
        writers = changes.writers()
        for gap in self.gaps:
            if gap.writers is None:
                gap.writers = writers
        late = changes.in_ranges([(gap.low, gap.high) for gap in self.gaps])
        filled = sorted(change.pk for change in late)
        remaining: list[Gap] = []
        for gap in self.gaps:
            low = gap.low
            for pk in filled:
                if gap.low <= pk <= gap.high:
                    if pk > low:
                        remaining.append(Gap(low, pk - 1, gap.found, gap.writers))
                    low = pk + 1
            if low <= gap.high:
                remaining.append(Gap(low, gap.high, gap.found, gap.writers))
        self.gaps = [
            gap
            for gap in remaining
            if now - gap.found < KEEP_GAP and gap.writers is not None and gap.writers & writers
        ]
        return late

    def _prune_now_and_then(self, now: float) -> None:
        if now >= self._next_prune:
            self._next_prune = now + min(PRUNE_INTERVAL, conf.change_retention())
            changes.prune()
