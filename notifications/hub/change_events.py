"""Turn change-log rows into the `read` and `deleted` events of each user's streams.

Pure logic: the hub reads the change log (notifications.changes) and the users' unread counts,
and this module decides what each user's streams are sent. Changes read in one poll are
merged per user (every id marked read, the newest "all read", every id deleted), since each
event carries the user's unread count after all of them: the browser ends in the same state
whatever the order, with fewer events.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .. import payload
from ..models import Change

# Ids per event: a purge can delete thousands of one user's notifications at once, and one
# event per thousand keeps each well under the stream's byte budget.
IDS_PER_EVENT = 1000

READ = "read"
DELETED = "deleted"


@dataclass(frozen=True)
class ChangeEvent:
    """One named SSE event for a user's streams: `read` or `deleted`, and its data."""

    name: str
    data: dict[str, Any]


@dataclass
class UserChanges:
    """What changed for one user since the last poll."""

    read: set[int] = field(default_factory=set)
    # The newest id an "all read" covered, if one came.
    all_read: int | None = None
    deleted: set[int] = field(default_factory=set)

    def events(self, unread: int) -> list[ChangeEvent]:
        """Return the events that tell a stream of these changes, each with `unread`."""
        events = []
        if self.all_read is not None:
            events.append(ChangeEvent(READ, payload.all_read(self.all_read, unread)))
        # An id covered by the "all read" needs no event of its own.
        read = sorted(i for i in self.read if self.all_read is None or i > self.all_read)
        events.extend(ChangeEvent(READ, payload.read(ids, unread)) for ids in _batches(read))
        deleted = sorted(self.deleted)
        events.extend(
            ChangeEvent(DELETED, payload.deleted(ids, unread)) for ids in _batches(deleted)
        )
        return events


def by_user(changes: Iterable[Change], users: Mapping[int, object]) -> dict[int, UserChanges]:
    """Return the changes that concern these users (those with streams), merged per user."""
    found: dict[int, UserChanges] = {}
    for change in changes:
        for user_id, ids in change.by_user().items():
            if user_id not in users:
                continue
            merged = found.setdefault(user_id, UserChanges())
            if change.kind == Change.DELETED:
                merged.deleted.update(ids)
            elif change.newest is not None:
                merged.all_read = max(merged.all_read or 0, change.newest)
            else:
                merged.read.update(ids)
    return found


def _batches(ids: list[int]) -> Iterable[list[int]]:
    for start in range(0, len(ids), IDS_PER_EVENT):
        yield ids[start : start + IDS_PER_EVENT]
