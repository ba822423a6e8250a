"""The horizon's pure logic: rows passed in id order, behind holes until they are resolved."""

from __future__ import annotations

from notifications.hub.horizon import Horizon

NOBODY: frozenset[str] = frozenset()
WRITER = frozenset({"3/17"})


def postgresql(start: int = 100, writers: frozenset[str] = NOBODY) -> Horizon:
    return Horizon(start, 0.0, holes_can_fill=True, writers=writers, hold_back=3.0, keep_late=60.0)


def test_rows_without_holes_pass_at_once_in_id_order() -> None:
    horizon = postgresql()
    horizon.add_scanned([(101, 1), (102, 2), (103, 1)], now=1.0)

    assert horizon.advance(now=1.0) == [(101, 1), (102, 2), (103, 1)]
    assert horizon.position == 103
    assert horizon.holes == []


def test_a_hole_holds_back_the_rows_above_it_until_its_row_appears() -> None:
    horizon = postgresql()
    horizon.add_scanned([(101, 1), (103, 2), (104, 3)], now=1.0)

    assert horizon.advance(now=1.0) == [(101, 1)]
    assert horizon.position == 101
    assert horizon.pending_ids == 1
    assert horizon.held == 2

    assert horizon.fill([], WRITER) == []
    assert horizon.advance(now=1.1) == []

    assert horizon.fill([(102, 9)], WRITER) == []
    assert horizon.advance(now=1.2) == [(102, 9), (103, 2), (104, 3)]
    assert horizon.position == 104
    assert horizon.holes == []


def test_a_hole_whose_writers_are_gone_is_dropped_and_releases_the_rows() -> None:
    horizon = postgresql()
    horizon.add_scanned([(101, 1), (103, 2)], now=1.0)
    horizon.advance(now=1.0)
    # Found with a writer at work: it may still commit.
    horizon.fill([], WRITER)
    assert horizon.advance(now=1.1) == []

    # That writer ended (a new one, which cannot hold id 102, is at work) and 102 is not there.
    horizon.fill([], frozenset({"4/2"}))

    assert horizon.advance(now=1.2) == [(103, 2)]
    assert horizon.holes == []


def test_a_hole_found_while_nobody_writes_is_dropped_at_once() -> None:
    horizon = postgresql()
    horizon.add_scanned([(103, 2)], now=1.0)
    horizon.fill([], NOBODY)

    assert horizon.advance(now=1.0) == [(103, 2)]


def test_after_the_hold_back_the_rows_pass_and_a_late_row_still_comes_out_once() -> None:
    horizon = postgresql(start=0)
    horizon.add_scanned([(101, 1), (102, 2)], now=1.0)
    horizon.fill([], WRITER)
    assert horizon.advance(now=3.9) == []

    assert horizon.advance(now=4.0) == [(101, 1), (102, 2)]
    assert horizon.position == 102
    assert horizon.pending_ids == 0
    assert horizon.late_ids == 100

    assert horizon.fill([(50, 7)], WRITER) == [(50, 7)]
    assert horizon.fill([(50, 7)], WRITER) == []
    assert horizon.advance(now=4.1) == []
    assert horizon.late_ids == 99


def test_late_holes_are_forgotten_after_keep_late_seconds() -> None:
    horizon = postgresql()
    horizon.add_scanned([(110, 1)], now=1.0)
    horizon.fill([], WRITER)
    horizon.advance(now=4.0)
    assert horizon.late_ids == 9

    horizon.advance(now=61.0)

    assert horizon.holes == []


def test_rows_filling_a_wide_hole_split_it_and_pass_in_order() -> None:
    horizon = postgresql()
    horizon.add_scanned([(110, 1)], now=1.0)
    horizon.fill([(103, 2), (101, 3), (105, 4)], WRITER)

    assert horizon.advance(now=1.0) == [(101, 3)]
    assert [(h.low, h.high) for h in horizon.holes] == [(102, 102), (104, 104), (106, 109)]

    horizon.fill([(102, 5), (104, 6), *((pk, 8) for pk in range(106, 110))], WRITER)

    assert [pk for pk, _ in horizon.advance(now=1.1)] == list(range(102, 111))


def test_several_holes_each_keep_the_writers_of_when_they_were_found() -> None:
    horizon = postgresql()
    horizon.add_scanned([(102, 1)], now=1.0)
    horizon.fill([], WRITER)
    second = frozenset({"5/1"})
    horizon.add_scanned([(104, 1)], now=1.5)
    horizon.fill([], WRITER | second)

    # The first writer ended: 101 is dead; 103 waits for the second one.
    horizon.fill([], second)

    assert horizon.advance(now=1.6) == [(102, 1)]
    assert [(h.low, h.high) for h in horizon.holes] == [(103, 103)]


def test_sqlite_has_no_holes() -> None:
    horizon = Horizon(100, 0.0, holes_can_fill=False, writers=WRITER)
    assert horizon.ready
    horizon.add_scanned([(105, 1), (107, 2)], now=1.0)

    assert horizon.advance(now=1.0) == [(105, 1), (107, 2)]
    assert horizon.holes == []


def test_the_start_is_ready_once_its_writers_are_gone_or_the_hold_back_passed() -> None:
    horizon = postgresql(writers=WRITER)
    assert not horizon.ready
    horizon.settle(WRITER | {"9/9"}, now=1.0)
    assert not horizon.ready
    horizon.settle(frozenset({"9/9"}), now=1.1)
    assert horizon.ready

    stuck = postgresql(writers=WRITER)
    stuck.settle(WRITER, now=2.9)
    assert not stuck.ready
    stuck.settle(WRITER, now=3.0)
    assert stuck.ready


def test_rows_read_again_or_below_the_cursor_are_ignored() -> None:
    horizon = postgresql()
    horizon.add_scanned([(101, 1), (101, 1), (99, 1)], now=1.0)

    assert horizon.advance(now=1.0) == [(101, 1)]
