"""A user's notifications as the JSON API sees them: pages of history, unread counts, read state.

Listing claims nothing and marks nothing read. Marking read records a change in the same
transaction (notifications.changes), which every process's hub reads and sends to the user's
open streams as an `event: read`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

from django.db import connections, transaction
from django.db.models import QuerySet
from django.utils import timezone

from . import changes
from .hub import wake_local_hubs
from .models import Notification
from .queries import database_alias

# Ids per UPDATE: far below SQLite's and PostgreSQL's limits on bound parameters.
CHUNK_SIZE = 500


class Page(NamedTuple):
    """Up to `limit` notifications, newest first, and whether older ones remain."""

    rows: list[Notification]
    more: bool


def page(user_id: int, *, before: int | None, limit: int) -> Page:
    """Return the user's notifications with an id below `before` (all if None), newest first."""
    rows = _notifications().filter(user_id=user_id)
    if before is not None:
        rows = rows.filter(pk__lt=before)
    found = list(rows.order_by("-pk")[: limit + 1])
    return Page(found[:limit], len(found) > limit)


def unread_count(user_id: int) -> int:
    """Return how many of the user's notifications are unread."""
    return _notifications().filter(user_id=user_id, read_at__isnull=True).count()


def mark_read(user_id: int, ids: Iterable[int]) -> int:
    """Mark these notifications of the user read; return the user's unread count after.

    Ids of other users' notifications, unknown ids and ids already read change nothing (a
    notification keeps the time it was first read). What did change is recorded for the
    user's open streams.
    """
    wanted = sorted(set(ids))
    alias = database_alias()
    connection = connections[alias]
    # As the ORM stores it (naive UTC text on SQLite), not as the driver would adapt it.
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    table = connection.ops.quote_name(Notification._meta.db_table)
    marked: list[int] = []
    with transaction.atomic(using=alias):
        for chunk in _chunks(wanted):
            placeholders = ", ".join(["%s"] * len(chunk))
            # One statement that reads and writes: two requests marking the same ids at once
            # both succeed, and only the first sets read_at and reports the ids.
            sql = (
                f"UPDATE {table} SET read_at = %s "  # noqa: S608
                f"WHERE user_id = %s AND id IN ({placeholders}) AND read_at IS NULL "
                "RETURNING id"
            )
            with connection.cursor() as cursor:
                cursor.execute(sql, [now, user_id, *chunk])
                marked.extend(row[0] for row in cursor.fetchall())
        if marked:
            changes.record_read(user_id, marked)
            _wake_hubs_on_commit(alias)
        return unread_count(user_id)


def mark_all_read(user_id: int, *, newest: int | None = None) -> int:
    """Mark every unread notification of the user read, up to id `newest` if given.

    Return the user's unread count after. Without `newest`, the user's newest notification
    at this moment is the bound, so the change event can name what it covered.
    """
    alias = database_alias()
    with transaction.atomic(using=alias):
        unread = _notifications().filter(user_id=user_id, read_at__isnull=True)
        if newest is None:
            newest = unread.order_by("-pk").values_list("pk", flat=True).first()
        if newest is not None:
            count = unread.filter(pk__lte=newest).update(read_at=timezone.now())
            if count:
                changes.record_all_read(user_id, newest)
                _wake_hubs_on_commit(alias)
        return unread_count(user_id)


def _notifications() -> QuerySet[Notification]:
    return Notification.objects.using(database_alias())


def _wake_hubs_on_commit(alias: str) -> None:
    # This process's streams hear at once; other processes by NOTIFY or data_version.
    transaction.on_commit(wake_local_hubs, using=alias, robust=True)


def _chunks(ids: Sequence[int]) -> Iterable[Sequence[int]]:
    for start in range(0, len(ids), CHUNK_SIZE):
        yield ids[start : start + CHUNK_SIZE]
