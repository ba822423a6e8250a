"""hub.change_events: change-log rows merged per user into read and deleted events."""

from __future__ import annotations

from notifications.hub.change_events import IDS_PER_EVENT, ChangeEvent, UserChanges, by_user
from notifications.models import Change


def read(user: int, ids: list[int]) -> Change:
    return Change(kind="read", ids={str(user): ids})


def all_read(user: int, newest: int) -> Change:
    return Change(kind="read", ids={str(user): []}, newest=newest)


def deleted(ids: dict[int, list[int]]) -> Change:
    return Change(kind="deleted", ids={str(user): i for user, i in ids.items()})


def test_changes_are_merged_per_user_and_only_for_users_with_streams() -> None:
    changes = [
        read(1, [10, 11]),
        deleted({1: [5], 2: [6], 3: [7]}),
        read(1, [12]),
        all_read(2, 40),
        all_read(2, 30),
        read(9, [1]),
    ]

    merged = by_user(changes, {1: "stream", 2: "stream", 3: "stream"})

    assert merged == {
        1: UserChanges(read={10, 11, 12}, deleted={5}),
        2: UserChanges(all_read=40, deleted={6}),
        3: UserChanges(deleted={7}),
    }


def test_events_carry_the_unread_count_and_no_id_field() -> None:
    events = UserChanges(read={3, 1}, all_read=None, deleted={9}).events(unread=4)
    assert events == [
        ChangeEvent("read", {"ids": [1, 3], "unread": 4}),
        ChangeEvent("deleted", {"ids": [9], "unread": 4}),
    ]


def test_all_read_comes_first_and_covers_the_ids_below_it() -> None:
    events = UserChanges(read={5, 50}, all_read=20).events(unread=0)
    assert events == [
        ChangeEvent("read", {"all": True, "newest": 20, "unread": 0}),
        ChangeEvent("read", {"ids": [50], "unread": 0}),
    ]


def test_many_ids_are_split_into_events_of_at_most_a_thousand() -> None:
    events = UserChanges(deleted=set(range(1, 2 * IDS_PER_EVENT + 2))).events(unread=0)
    assert [len(e.data["ids"]) for e in events] == [IDS_PER_EVENT, IDS_PER_EVENT, 1]
    assert events[0].data["ids"][0] == 1
    assert events[-1].data["ids"] == [2 * IDS_PER_EVENT + 1]


def test_nothing_changed_means_no_events() -> None:
    assert UserChanges().events(unread=3) == []
