"""The change log: read and deleted notifications, for every process's open streams to hear of.

A change is written in the transaction that makes it (marking read by notifications.inbox,
deleting by the database trigger of migration 0005), so it exists exactly when the change
committed. Each process reads the log by id, like new notifications, and tells its streams;
rows are pruned after NOTIFICATIONS_CHANGE_RETENTION seconds, long after every process has
read them.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import timedelta
from functools import reduce
from operator import or_

from django.db import connections
from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from . import conf
from .models import Change, Notification
from .queries import database_alias, table_writers

# Id ranges per query when gaps are read again.
RANGES_PER_QUERY = 200

# Users per count query: far below SQLite's and PostgreSQL's limits on bound parameters.
USERS_PER_QUERY = 500


def record_read(user_id: int, ids: Sequence[int]) -> Change:
    """Record that these notifications of the user were marked read.

    Call inside the transaction that marked them, and wake the hubs once it commits.
    """
    return _record(Change(kind=Change.READ, ids={str(user_id): sorted(ids)}))


def record_all_read(user_id: int, newest: int) -> Change:
    """Record that every notification of the user up to `newest` was marked read."""
    return _record(Change(kind=Change.READ, ids={str(user_id): []}, newest=newest))


def _record(change: Change) -> Change:
    change.save(force_insert=True, using=database_alias())
    return change


def _changes() -> QuerySet[Change]:
    return Change.objects.using(database_alias())


def latest_id() -> int:
    """Return the id of the newest change, 0 when there is none: where a new reader starts."""
    newest = _changes().order_by("-pk").values_list("pk", flat=True).first()
    return newest or 0


def after(cursor: int, limit: int) -> list[Change]:
    """Return the changes with an id above `cursor`, oldest first, at most `limit`."""
    return list(_changes().filter(pk__gt=cursor).order_by("pk")[:limit])


def ids_between(low: int, high: int) -> list[int]:
    """Return the ids of the changes visible now from `low` to `high` (inclusive), in order."""
    return list(
        _changes().filter(pk__range=(low, high)).order_by("pk").values_list("pk", flat=True)
    )


def in_ranges(ranges: Sequence[tuple[int, int]]) -> list[Change]:
    """Return the changes visible now with an id in one of these (inclusive) ranges."""
    found: list[Change] = []
    for start in range(0, len(ranges), RANGES_PER_QUERY):
        chunk = ranges[start : start + RANGES_PER_QUERY]
        where = reduce(or_, (Q(pk__range=bounds) for bounds in chunk))
        found.extend(_changes().filter(where).order_by("pk"))
    return found


def writers() -> frozenset[str]:
    """Return the transactions writing to the change log now (PostgreSQL; elsewhere none).

    A change with an id that is not visible yet belongs to one of them, or never commits
    (see queries.table_writers).
    """
    return table_writers(Change)


def ids_can_commit_out_of_order() -> bool:
    """Whether a change can become visible after one with a higher id (PostgreSQL: yes).

    SQLite allocates an id under the database's write lock and commits or rolls back before
    the next insert starts, so a gap there never fills.
    """
    return connections[database_alias()].vendor == "postgresql"


def prune() -> int:
    """Delete changes older than the retention; return how many went."""
    cutoff = timezone.now() - timedelta(seconds=conf.change_retention())
    count, _ = _changes().filter(created__lt=cutoff).delete()
    return count


def unread_counts(user_ids: Collection[int], *, up_to: int | None = None) -> dict[int, int]:
    """Return the unread count of each of these users (0 for those with none unread).

    `up_to`: count only notifications with an id up to it (those a hub has handed out).
    """
    counts = dict.fromkeys(user_ids, 0)
    users = sorted(counts)
    unread = Notification.objects.using(database_alias()).filter(read_at__isnull=True)
    if up_to is not None:
        unread = unread.filter(pk__lte=up_to)
    for start in range(0, len(users), USERS_PER_QUERY):
        chunk = users[start : start + USERS_PER_QUERY]
        rows = (
            unread.filter(user_id__in=chunk)
            .order_by()
            .values_list("user_id")
            .annotate(unread=Count("id"))
        )
        counts.update(dict(rows))
    return counts
