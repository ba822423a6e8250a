"""The order in which a process passes new notifications to its streams: by id, behind holes.

Each process reads every new row once, with a cursor on the id. Streams resume from the id of
the last event they received (Last-Event-ID), so events must go out in id order: if a stream
sent 105 and then 104, a resume from 104 would send 105 again, and a resume from 105 would miss
104 had it committed while the client was away. But ids are allocated when a row is inserted,
not when it commits: on PostgreSQL, 104 can become visible after 105.

So a process passes rows on in id order, up to its *position*: every id at or below it is
resolved (its row was passed on, or it can no longer commit). Ids above the position that are
not visible yet are *holes*; rows above the lowest hole are held back until it is resolved:

- its row becomes visible: it is passed on, in order;
- or it can no longer commit. On PostgreSQL an INSERT takes RowExclusiveLock on the table
  before it allocates the id, and keeps it until it ends. A hole's id was allocated before the
  read that found a higher id; the transactions holding that lock just after that read (its
  *writers*) therefore include the one that can still commit the hole. Once none of those is
  still writing and the hole is still not visible, it never will be (a rollback, or a
  sequence value never used): it is dropped.
- or HOLD_BACK seconds pass: one long transaction elsewhere must not stall every stream. The
  hole is given up: rows above it are passed on, and the hole becomes *late*: if its row
  appears later (within the keep_late seconds) it is still passed on, to every open stream of
  its user, out of order (the stream then restores the browser's Last-Event-ID).

On SQLite an id is allocated under the database's write lock and commits (or rolls back, and
is allocated again) before the next insert can start, and AUTOINCREMENT never reuses an id:
a gap there is a deleted row, never one still to come. Such a Horizon has no holes.

This module is the pure logic; the hub runs the queries (a scan above max_seen, the writers,
a read of the hole ranges) and hands their results here.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# (id, user_id) of a row: all the horizon needs to know of it.
Row = tuple[int, int]

# Seconds a hole may hold back the rows above it before it is given up (see the docstring).
HOLD_BACK = 3.0


@dataclass
class Hole:
    """Ids `low` to `high` (inclusive), allocated but not visible."""

    low: int
    high: int
    # time.monotonic() when it was found.
    found: float
    # The transactions that held RowExclusiveLock on the table just after the hole was found;
    # None until read.
    writers: frozenset[str] | None = None

    @property
    def size(self) -> int:
        return self.high - self.low + 1


class Horizon:
    """Pass rows on in id order, behind the holes that may still fill."""

    def __init__(
        self,
        start: int,
        now: float,
        *,
        holes_can_fill: bool,
        writers: frozenset[str] = frozenset(),
        hold_back: float = HOLD_BACK,
        keep_late: float = 60.0,
    ) -> None:
        """Start at `start`, the highest visible id, read at `now`.

        `writers`: the transactions writing to the table just after `start` was read. Ids
        below `start` that are still to commit belong to them; `ready` is False until they
        have ended (or hold_back has passed), and a caller that needs everything up to
        `start` settled (a replay, a catch-up) waits for it.
        """
        self.position = start
        self.max_seen = start
        self.holes_can_fill = holes_can_fill
        self.hold_back = hold_back
        self.keep_late = keep_late
        self._started = now
        self._settling = writers if holes_can_fill else frozenset()
        self._pending: list[Hole] = []
        self._late: list[Hole] = []
        self._held: list[Row] = []

    # What the hub asks.

    @property
    def ready(self) -> bool:
        """True once no write that began before the start can still commit an id below it."""
        return not self._settling

    @property
    def holes(self) -> list[Hole]:
        """Every hole to look at again: those that hold rows back, then the late ones."""
        return [*self._pending, *self._late]

    @property
    def pending_ids(self) -> int:
        """Ids that hold rows back now."""
        return sum(hole.size for hole in self._pending)

    @property
    def late_ids(self) -> int:
        """Ids given up on that may still appear."""
        return sum(hole.size for hole in self._late)

    @property
    def held(self) -> int:
        """Rows read and held back behind a hole."""
        return len(self._held)

    # What the hub tells.

    def settle(self, writers: frozenset[str], now: float) -> None:
        """Note who writes now; the start is settled once none of its writers does."""
        if self._settling and (
            not self._settling & writers or now - self._started >= self.hold_back
        ):
            self._settling = frozenset()

    def add_scanned(self, rows: Sequence[Row], now: float) -> None:
        """Take rows read above max_seen, in id order; the ids skipped are holes."""
        for pk, user_id in rows:
            if pk <= self.max_seen:
                continue
            if pk > self.max_seen + 1 and self.holes_can_fill:
                self._pending.append(Hole(self.max_seen + 1, pk - 1, now))
            self._held.append((pk, user_id))
            self.max_seen = pk

    def fill(self, rows: Iterable[Row], writers: frozenset[str]) -> list[Row]:
        """Take what a read of every hole found, read after `writers`; return the late rows.

        Rows that fill a pending hole wait for their turn; rows that fill a late hole are
        returned, to be passed on at once. A hole that is still empty, none of whose writers
        still writes, is dropped: nothing can commit it any more.
        """
        for hole in self.holes:
            if hole.writers is None:
                hole.writers = writers
        found = sorted(rows)
        late: list[Row] = []
        self._pending = self._fill(self._pending, found, self._held)
        self._late = self._fill(self._late, found, late)
        self._pending = [h for h in self._pending if self._may_fill(h, writers)]
        self._late = [h for h in self._late if self._may_fill(h, writers)]
        return late

    def advance(self, now: float) -> list[Row]:
        """Move the position as far as the holes allow; return the rows passed, in id order."""
        waiting = []
        for hole in self._pending:
            if now - hole.found >= self.hold_back:
                self._late.append(hole)
            else:
                waiting.append(hole)
        self._pending = waiting
        self._late = sorted(
            (h for h in self._late if now - h.found < self.keep_late), key=lambda h: h.low
        )
        position = self._pending[0].low - 1 if self._pending else self.max_seen
        cut = bisect.bisect_right(self._held, position, key=lambda row: row[0])
        passed, self._held = self._held[:cut], self._held[cut:]
        self.position = max(self.position, position)
        return passed

    @staticmethod
    def _may_fill(hole: Hole, writers: frozenset[str]) -> bool:
        return hole.writers is None or bool(hole.writers & writers)

    @staticmethod
    def _fill(holes: list[Hole], found: list[Row], into: list[Row]) -> list[Hole]:
        """Split `holes` around the rows of `found` inside them; add those rows to `into`."""
        if not found:
            return holes
        ids = [pk for pk, _ in found]
        result = []
        for hole in holes:
            start = bisect.bisect_left(ids, hole.low)
            end = bisect.bisect_right(ids, hole.high)
            if start == end:
                result.append(hole)
                continue
            low = hole.low
            for row in found[start:end]:
                if row[0] > low:
                    result.append(Hole(low, row[0] - 1, hole.found, hole.writers))
                low = row[0] + 1
                bisect.insort(into, row)
            if low <= hole.high:
                result.append(Hole(low, hole.high, hole.found, hole.writers))
        return result
