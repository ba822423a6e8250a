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

from django.db.models import Count, QuerySet
from django.utils import timezone

from . import conf
from .models import Change, Notification
from .queries import database_alias

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


def prune() -> int:
    """Delete changes older than the retention; return how many went."""
    cutoff = timezone.now() - timedelta(seconds=conf.change_retention())
    count, _ = _changes().filter(created__lt=cutoff).delete()
    return count


def unread_counts(user_ids: Collection[int]) -> dict[int, int]:
    """Return the unread count of each of these users (0 for those with none unread)."""
    counts = dict.fromkeys(user_ids, 0)
    users = sorted(counts)
    unread = Notification.objects.using(database_alias()).filter(read_at__isnull=True)
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
