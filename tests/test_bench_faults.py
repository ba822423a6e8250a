"""The fault run's verdict (bench/faults.py), on made-up streams: what counts as lost or failed."""

from __future__ import annotations

from typing import Any

from bench.faults import Fault, Options, judge, storm

OPTIONS = Options(
    processes=3,
    users=2,
    clients_per_user=(2, 3),
    notifications=0,
    duration=60.0,
    stay=(1.0, 2.0),
    pause=1.0,
    retry=(0.05, 0.5),
    quiet=4.0,
    grace=2.0,
    kill=True,
    kill_at=0.3,
    down=2.0,
    cut=True,
    cut_at=0.6,
    backlog=4096,
    seed=1,
)
ALICE, BOB = 1, 2
# Client 0 is Alice's, client 1 Bob's.
CLIENTS = {0: ALICE, 1: BOB}


def attempt(
    client: int,
    number: int,
    opened: float | None,
    closed: float,
    *,
    cursor: int = 0,
    server: int = 0,
    status: int = 200,
    error: str = "",
) -> dict[str, Any]:
    return {
        "client": client,
        "number": number,
        "server": server,
        "cursor": cursor,
        "requested": (opened if opened is not None else closed) - 0.01,
        "opened": opened,
        "closed": closed,
        "status": status,
        "error": error,
        "ended_by": "client" if opened is not None else "",
    }


def test_stream_that_got_every_row_of_its_user_passes() -> None:
    rows = {1: (ALICE, 105.0), 2: (BOB, 106.0), 3: (ALICE, 107.0)}
    events = [(0, 0, 1, 105.1, 2), (0, 0, 3, 107.1, 3), (1, 0, 2, 106.1, 2)]
    verdict = judge(
        OPTIONS,
        100,
        rows,
        CLIENTS,
        [attempt(0, 0, 100.0, 120.0), attempt(1, 0, 100.0, 120.0)],
        events,
    )
    assert verdict["streams"] == 2
    assert verdict["streams_failed"] == 0
    assert verdict["lost_by_a_client"] == 0
    assert verdict["live_latency"]["max_ms"] == 100.0


def test_row_created_while_open_and_not_received_is_lost() -> None:
    rows = {1: (ALICE, 105.0), 2: (ALICE, 110.0)}
    events = [(0, 0, 1, 105.1, 2)]
    verdict = judge(OPTIONS, 100, rows, {0: ALICE}, [attempt(0, 0, 100.0, 120.0)], events)
    assert verdict["lost"] == 1
    assert verdict["streams_failed"] == 1
    assert verdict["lost_by_a_client"] == 1
    assert verdict["failed_examples"][0]["missing_ids"] == [2]
    assert verdict["lost_rows_had_s"] == {"min": 10.0, "median": 10.0, "max": 10.0}


def test_row_created_within_the_grace_before_the_end_is_due_on_the_next_stream_only() -> None:
    rows = {1: (ALICE, 119.0)}
    first = attempt(0, 0, 100.0, 120.0)
    # Back with its cursor: the row comes by replay.
    second = attempt(0, 1, 121.0, 130.0, cursor=0)
    verdict = judge(OPTIONS, 100, rows, {0: ALICE}, [first, second], [(0, 1, 1, 121.1, 1)])
    assert verdict["lost"] == 0
    assert verdict["lost_by_a_client"] == 0
    # Never received on any connection: lost for the client, though no stream owed it.
    verdict = judge(OPTIONS, 100, rows, {0: ALICE}, [first], [])
    assert verdict["streams_failed"] == 0
    assert verdict["lost_by_a_client"] == 1


def test_row_after_the_cursor_is_owed_by_replay_once_the_stream_lived_the_grace() -> None:
    rows = {5: (ALICE, 90.0)}
    long_enough = attempt(0, 0, 100.0, 103.0, cursor=4)
    too_short = attempt(0, 1, 110.0, 111.0, cursor=4)
    verdict = judge(OPTIONS, 100, rows, {0: ALICE}, [long_enough, too_short], [])
    assert verdict["lost"] == 1
    assert verdict["failed_examples"][0]["number"] == 0


def test_replay_beyond_the_replay_limit_is_not_owed() -> None:
    rows = {pk: (ALICE, 90.0 + pk / 100) for pk in range(1, 6)}
    events = [(0, 0, pk, 100.1, 1) for pk in (4, 5)]
    verdict = judge(OPTIONS, 2, rows, {0: ALICE}, [attempt(0, 0, 100.0, 110.0)], events)
    assert verdict["lost"] == 0
    assert verdict["beyond_replay_limit"] == 3


def test_twice_another_users_row_and_a_row_at_the_cursor_fail_the_stream() -> None:
    rows = {1: (ALICE, 101.0), 2: (BOB, 102.0), 3: (ALICE, 103.0)}
    events = [(0, 0, 3, 103.1, 2), (0, 0, 3, 103.2, 3), (0, 0, 2, 102.1, 2), (0, 0, 1, 101.1, 1)]
    verdict = judge(OPTIONS, 100, rows, CLIENTS, [attempt(0, 0, 100.0, 120.0, cursor=1)], events)
    assert verdict["received_twice"] == 1
    assert verdict["received_twice_by_a_client"] == 1
    assert verdict["wrong_user"] == 1
    assert verdict["at_or_below_cursor"] == 1
    assert verdict["streams_failed"] == 1


def test_storm_expects_refusals_while_down_and_counts_everything_else() -> None:
    kill = Fault("kill", at=200.0, server=0, listening=203.0)
    attempts = [
        # Cut by the kill itself (one waiting for its answer since before), then refused
        # while the process is down.
        attempt(0, 0, None, 200.1, status=0, error="IncompleteReadError"),
        {**attempt(1, 9, None, 200.2, status=0, error="IncompleteReadError"), "requested": 190.0},
        attempt(0, 1, None, 201.0, status=0, error="ConnectionRefusedError"),
        # Back: one opens, one is reset (a listen queue too short), one refused too late.
        attempt(0, 2, 203.2, 210.0),
        attempt(1, 0, None, 203.3, status=0, error="ConnectionResetError"),
        attempt(1, 1, None, 204.0, status=0, error="ConnectionRefusedError"),
        # Another process refuses a connection: a failure too.
        attempt(1, 2, None, 150.0, server=1, status=0, error="ConnectionRefusedError"),
        attempt(1, 3, None, 205.0, server=1, status=503),
    ]
    result = storm(attempts, [kill])
    assert result["cut_by_the_kill"] == 2
    assert result["refused_while_down"] == 1
    assert result["failed_in_storm"] == {"ConnectionResetError": 1, "ConnectionRefusedError": 1}
    assert result["failed_elsewhere"] == {"ConnectionRefusedError": 1}
    assert result["failed_connections"] == 3
    assert result["answered_5xx"] == {"503": 1}
    assert result["clients_back"] == 1
    assert result["down_seconds"] == 3.0


def test_row_received_on_two_connections_of_a_client_is_received_twice_by_it() -> None:
    rows = {1: (ALICE, 101.0)}
    first = attempt(0, 0, 100.0, 110.0)
    # Came back with a cursor below the row (a late row moved it back): replayed again.
    second = attempt(0, 1, 111.0, 120.0, cursor=0)
    events = [(0, 0, 1, 101.1, 2), (0, 1, 1, 111.1, 1)]
    verdict = judge(OPTIONS, 100, rows, {0: ALICE}, [first, second], events)
    assert verdict["streams_failed"] == 0
    assert verdict["received_twice_by_a_client"] == 1
