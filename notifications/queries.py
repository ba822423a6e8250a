"""The database side of delivery: every query the hub and the page make, as sync functions.

Claiming is one UPDATE ... RETURNING that sets `dispatched` only where it is still false, so
two claimers (two processes, two polls, a page render) never both get a row. Django 5.2's ORM
has no UPDATE ... RETURNING; SQLite (3.35+) and PostgreSQL both run the raw statement.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from datetime import datetime, timedelta
from typing import NamedTuple

from django.db import connections, router, transaction
from django.db.models import QuerySet
from django.utils import timezone

from .models import Notification

# Ids per UPDATE: far below SQLite's and PostgreSQL's limits on bound parameters.
CHUNK_SIZE = 500


def database_alias() -> str:
    """Return the database that holds notifications: the router's choice for writing them.

    Every query here reads it too, and so do the hub's worker and change watchers: a claim
    reads and writes the same rows, and a replica may lag behind.
    """
    return router.db_for_write(Notification)


def _table(alias: str) -> str:
    return connections[alias].ops.quote_name(Notification._meta.db_table)


def _chunks(ids: Sequence[int]) -> Iterable[Sequence[int]]:
    for start in range(0, len(ids), CHUNK_SIZE):
        yield ids[start : start + CHUNK_SIZE]


def pending_query(since: datetime) -> QuerySet[Notification, tuple[int, int]]:
    """Return the poll's query: (id, user_id) of every undispatched row created since `since`.

    No user filter: the partial index on `created` (undispatched rows only) serves exactly this
    query on SQLite and PostgreSQL, so its cost is the recent undispatched rows, not the users'
    history. Naming users in the WHERE clause lets the planners pick the (user, id) index
    instead and read every connected user's whole history each second.
    """
    return (
        Notification.objects.using(database_alias())
        .filter(dispatched=False, created__gte=since)
        .order_by("created")
        .values_list("id", "user_id")
    )


def pending(user_ids: Collection[int], since: datetime, limit: int) -> list[tuple[int, int]]:
    """Return (id, user_id) of undispatched notifications created since `since` for these users.

    Oldest first, at most `limit`. Read-only: a candidate is not yet claimed.
    """
    if not user_ids:
        return []
    wanted = user_ids if isinstance(user_ids, (set, frozenset)) else set(user_ids)
    found = [(pk, user_id) for pk, user_id in pending_query(since) if user_id in wanted]
    return found[:limit]


def claim(ids: Sequence[int]) -> list[Notification]:
    """Mark these notifications dispatched where they are not yet; return the ones this call set.

    Ordered by id. A row another claimer got first is left out: it is theirs to send.
    """
    claimed: list[Notification] = []
    now = timezone.now()
    alias = database_alias()
    # All chunks or none: a row claimed by a chunk whose result is lost would never be sent.
    with transaction.atomic(using=alias):
        for chunk in _chunks(sorted(set(ids))):
            placeholders = ", ".join(["%s"] * len(chunk))
            sql = (
                f"UPDATE {_table(alias)} SET dispatched = %s, dispatched_at = %s "  # noqa: S608
                f"WHERE id IN ({placeholders}) AND dispatched = %s "
                # Every column the stream sends: a deferred one would cost a query per row.
                "RETURNING id, user_id, text, created, dispatched, dispatched_at, read_at, url, "
                "level"
            )
            claimed.extend(Notification.objects.raw(sql, [True, now, *chunk, False], using=alias))
    claimed.sort(key=lambda n: n.pk)
    return claimed


def release(ids: Sequence[int]) -> int:
    """Mark claimed notifications that reached no stream undispatched again; return how many."""
    released = 0
    alias = database_alias()
    with transaction.atomic(using=alias):
        for chunk in _chunks(sorted(set(ids))):
            released += (
                Notification.objects.using(alias)
                .filter(pk__in=chunk, dispatched=True)
                .update(dispatched=False, dispatched_at=None)
            )
    return released


def claim_pending(user_ids: Collection[int], *, window: float, limit: int) -> list[Notification]:
    """Claim the recent undispatched notifications of these users; return what was claimed."""
    since = timezone.now() - timedelta(seconds=window)
    candidates = pending(user_ids, since, limit)
    return claim([pk for pk, _ in candidates]) if candidates else []


def replay(user_id: int, after_id: int, limit: int) -> Shown:
    """Return the user's notifications with an id above `after_id`, dispatched or not.

    The newest `limit` of them, oldest first. Undispatched ones among them are claimed: the
    caller sends them to this stream and hands the claimed ones to the user's other streams.
    """
    rows = list(
        Notification.objects.using(database_alias())
        .filter(user_id=user_id, pk__gt=after_id)
        .order_by("-pk")[:limit]
    )
    rows.reverse()
    return Shown(rows, _claim_shown(rows))


def history(user_id: int, limit: int) -> Shown:
    """Return the user's newest `limit` notifications, newest first, claiming undispatched ones.

    What a page shows has been seen; the caller hands the claimed ones to the user's open
    streams, which would otherwise never get them.
    """
    rows = list(
        Notification.objects.using(database_alias()).filter(user_id=user_id).order_by("-pk")[:limit]
    )
    return Shown(rows, _claim_shown(rows))


class Shown(NamedTuple):
    """Rows about to be shown, and those among them that showing them claimed."""

    rows: list[Notification]
    claimed: list[Notification]


def _claim_shown(rows: list[Notification]) -> list[Notification]:
    undispatched = [n.pk for n in rows if not n.dispatched]
    if not undispatched:
        return []
    claimed = claim(undispatched)
    by_id = {n.pk: n for n in claimed}
    for n in rows:
        if n.pk in by_id:
            n.dispatched = True
            n.dispatched_at = by_id[n.pk].dispatched_at
    return claimed
