"""The database side of delivery: every query the hub and the page make, as sync functions.

Claiming is one UPDATE ... RETURNING that sets `dispatched` only where it is still false, so
two claimers (two processes, two polls, a page render) never both get a row. Django 5.2's ORM
has no UPDATE ... RETURNING; SQLite (3.35+) and PostgreSQL both run the raw statement.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from functools import reduce
from operator import or_
from typing import Any, NamedTuple

from django.db import connections, models, router, transaction
from django.db.models import Q
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


def claim(ids: Sequence[int]) -> list[Notification]:
    """Mark these notifications dispatched where they are not yet; return the ones this call set.

    Ordered by id. A row another claimer got first is left out: it is theirs to send. The
    rows come from the UPDATE's RETURNING, whole: a broadcast's claim is its only read.
    """
    claimed: list[Notification] = []
    now = timezone.now()
    alias = database_alias()
    connection = connections[alias]
    table = _table(alias)
    # Every column the stream sends: a deferred one would cost a query per row. Except
    # dispatched_at, which is `now` in every row returned: set below, not parsed per row.
    columns = _column_list(alias, null=_DISPATCHED_AT)
    # All chunks or none: a row claimed by a chunk whose result is lost would never be sent.
    with transaction.atomic(using=alias), connection.cursor() as cursor:
        for where, params in _id_filters(alias, sorted(set(ids))):
            cursor.execute(
                f"UPDATE {table} SET dispatched = %s, dispatched_at = %s "  # noqa: S608
                f"WHERE {where} AND dispatched = %s RETURNING {columns}",
                [True, now, *params, False],
            )
            claimed.extend(_load(alias, cursor.fetchall()))
    for notification in claimed:
        notification.dispatched_at = now
    claimed.sort(key=lambda n: n.pk)
    return claimed


# The columns a claim returns, in the model's order: Model.from_db() takes them positionally.
_COLUMNS = [field.column for field in Notification._meta.concrete_fields if field.column]
_ATTNAMES = [field.attname for field in Notification._meta.concrete_fields]
assert len(_COLUMNS) == len(_ATTNAMES)


_DISPATCHED_AT = Notification._meta.get_field("dispatched_at").column


def _column_list(alias: str, *, null: str | None = None) -> str:
    """_COLUMNS quoted for a select list; the column `null`, if given, as a NULL in its place."""
    quote = connections[alias].ops.quote_name
    return ", ".join("NULL" if name == null else quote(name) for name in _COLUMNS)


def _id_filters(alias: str, ids: Sequence[int]) -> Iterable[tuple[str, list[Any]]]:
    """Yield (WHERE clause, parameters) pairs that together select these ids.

    PostgreSQL takes them all as one array parameter: one statement, planned once, where a
    10,000-id IN list would be 20 statements of 500 parameters (measured: 235 ms against
    90 ms for a SELECT of 10,000 rows). Elsewhere, IN lists of CHUNK_SIZE.
    """
    if connections[alias].vendor == "postgresql":
        if ids:
            yield "id = ANY(%s)", [list(ids)]
        return
    for chunk in _chunks(ids):
        yield f"id IN ({', '.join(['%s'] * len(chunk))})", list(chunk)


def _load(alias: str, rows: Iterable[Sequence[Any]]) -> Iterable[Notification]:
    """Turn raw rows of _COLUMNS into Notifications, converted as the ORM would convert them
    (SQLite returns datetimes as text)."""
    connection = connections[alias]
    converters = []
    for index, field in enumerate(Notification._meta.concrete_fields):
        column = field.get_col(Notification._meta.db_table)
        found = connection.ops.get_db_converters(column) + column.get_db_converters(connection)
        if found:
            converters.append((index, column, found))
    for row in rows:
        values = list(row)
        for index, column, functions in converters:
            for convert in functions:
                values[index] = convert(values[index], column, connection)
        yield Notification.from_db(alias, _ATTNAMES, values)


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


def replay(user_id: int, after_id: int, up_to: int, limit: int) -> Shown:
    """Return the user's notifications with an id above `after_id` and at most `up_to`.

    Dispatched or not; the newest `limit` of them, oldest first. Undispatched ones among them
    are claimed: the caller sends them to its stream (and releases them if it cannot).
    """
    rows = list(
        Notification.objects.using(database_alias())
        .filter(user_id=user_id, pk__gt=after_id, pk__lte=up_to)
        .order_by("-pk")[:limit]
    )
    rows.reverse()
    return Shown(rows, _claim_shown(rows))


def history(user_id: int, limit: int) -> History:
    """Return the user's newest `limit` notifications up to a settled id, newest first.

    Settled: no row with a lower id can still appear (settled_newest_id()), so a stream that
    resumes from it (`History.up_to`) misses nothing. Undispatched rows shown are claimed:
    what a page shows has been seen.
    """
    up_to = settled_newest_id()
    rows = list(
        Notification.objects.using(database_alias())
        .filter(user_id=user_id, pk__lte=up_to)
        .order_by("-pk")[:limit]
    )
    _claim_shown(rows)
    return History(rows, up_to)


class History(NamedTuple):
    """A page's rows, and the id from which its stream resumes."""

    rows: list[Notification]
    up_to: int


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


# The poll: a cursor on the id over every user's new rows (see hub.horizon).

# Rows a scan reads at most; a larger backlog is read by the next polls without a pause.
SCAN_LIMIT = 5000

# Hole ranges per query when they are read again.
RANGES_PER_QUERY = 200

# Seconds between two looks at who writes, while settled_newest_id() waits.
SETTLE_CHECK_INTERVAL = 0.01


def newest_id() -> int:
    """Return the highest notification id visible now (0 when there is none)."""
    newest = (
        Notification.objects.using(database_alias())
        .order_by("-pk")
        .values_list("pk", flat=True)
        .first()
    )
    return newest or 0


def scan_sql(after_id: int, limit: int) -> tuple[str, list[int]]:
    """Return the poll's query and its parameters (see scan()).

    Bounded by ids on both sides, each part served by the primary key's index whatever the
    planner's statistics say. `id > cursor ORDER BY id LIMIT n` alone let PostgreSQL, with
    statistics from before a large insert into a small table, read and sort the whole table
    at every poll until autovacuum analyzed it again.
    """
    alias = database_alias()
    connection = connections[alias]
    table = _table(alias)
    pk = Notification._meta.pk
    assert pk is not None and pk.column is not None
    key = connection.ops.quote_name(pk.column)
    user = connection.ops.quote_name(Notification._meta.get_field("user").column)
    sql = (
        f"SELECT {key}, {user} FROM {table} WHERE {key} > %s AND {key} <= %s "  # noqa: S608
        f"UNION ALL SELECT {key}, {user} FROM (SELECT {key}, {user} FROM {table} "
        f"WHERE {key} > %s ORDER BY {key} LIMIT 1) AS beyond ORDER BY 1"
    )
    return sql, [after_id, after_id + limit, after_id + limit]


def scan(after_id: int, limit: int) -> list[tuple[int, int]]:
    """Return (id, user_id) of the rows above `after_id`, whoever they are for, in id order:
    those up to `after_id + limit`, and the first above that.

    So what it returns is every row from the cursor up to the last row returned, and at most
    `limit + 1` rows; when the last is above `after_id + limit` (scan_has_more()), more may
    follow it. Its cost is the new rows alone.
    """
    sql, params = scan_sql(after_id, limit)
    with connections[database_alias()].cursor() as cursor:
        cursor.execute(sql, params)
        return [(int(pk), int(user_id)) for pk, user_id in cursor.fetchall()]


def scan_has_more(after_id: int, limit: int, rows: Sequence[tuple[int, int]]) -> bool:
    """Whether rows may exist above the last of a scan's `rows` (see scan())."""
    return bool(rows) and rows[-1][0] > after_id + limit


def read_ranges(ranges: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Return (id, user_id) of the rows visible now with an id in one of these ranges."""
    found: list[tuple[int, int]] = []
    alias = database_alias()
    for start in range(0, len(ranges), RANGES_PER_QUERY):
        chunk = ranges[start : start + RANGES_PER_QUERY]
        where = reduce(or_, (Q(pk__range=bounds) for bounds in chunk))
        found.extend(
            Notification.objects.using(alias)
            .filter(where)
            .order_by("pk")
            .values_list("pk", "user_id")
        )
    return found


def writers() -> frozenset[str]:
    """Return the transactions writing to the notification table now (PostgreSQL; else none).

    An INSERT takes RowExclusiveLock before it allocates its id and keeps it until the
    transaction ends. (UPDATEs and DELETEs take it too; they only make a hole wait a little
    longer.)
    """
    return table_writers(Notification)


def table_writers(model: type[models.Model]) -> frozenset[str]:
    """Return the transactions that hold RowExclusiveLock on this model's table now.

    PostgreSQL only (elsewhere none); this connection's excepted. Prepared transactions have
    no pid and are kept.
    """
    connection = connections[database_alias()]
    if connection.vendor != "postgresql":
        return frozenset()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT DISTINCT virtualtransaction FROM pg_locks "
            "WHERE locktype = 'relation' AND mode = 'RowExclusiveLock' "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND relation = %s::regclass AND pid IS DISTINCT FROM pg_backend_pid()",
            [connection.ops.quote_name(model._meta.db_table)],
        )
        return frozenset(row[0] for row in cursor.fetchall())


class Start(NamedTuple):
    """Where a hub's cursor starts: the newest id, and who was writing just after."""

    newest_id: int
    writers: frozenset[str]


def start() -> Start:
    """Return where a poll's cursor starts (hub.horizon.Horizon)."""
    newest = newest_id()
    return Start(newest, writers())


def settled_newest_id(timeout: float = 3.0) -> int:
    """Return the newest visible id once no row with a lower id can still appear.

    On PostgreSQL, a transaction that began writing before the newest id was read may still
    commit a lower one: wait (up to `timeout` seconds) until every such writer has ended. On
    SQLite nothing waits: ids commit in order there.
    """
    newest, waiting = start()
    deadline = time.monotonic() + timeout
    while waiting and time.monotonic() < deadline:
        time.sleep(SETTLE_CHECK_INTERVAL)
        waiting &= writers()
    return newest


class Deliverable(NamedTuple):
    """Rows to hand to streams, and the ids of those this call claimed."""

    rows: list[Notification]
    claimed: frozenset[int]


def deliverable(ids: Sequence[int]) -> Deliverable:
    """Claim the undispatched ones among these notifications, then return them all, by id.

    Claimed first and read after, so each row says whether it is dispatched now; only the
    rows another claimer got are read again.
    """
    claimed = claim(ids) if ids else []
    taken = {n.pk for n in claimed}
    rows = claimed + fetch(pk for pk in ids if pk not in taken)
    rows.sort(key=lambda n: n.pk)
    return Deliverable(rows, frozenset(taken))


def fetch(ids: Iterable[int]) -> list[Notification]:
    """Return these notifications (those that exist), in id order."""
    rows: list[Notification] = []
    alias = database_alias()
    connection = connections[alias]
    columns = _column_list(alias)
    with connection.cursor() as cursor:
        for where, params in _id_filters(alias, sorted(set(ids))):
            cursor.execute(f"SELECT {columns} FROM {_table(alias)} WHERE {where}", params)  # noqa: S608
            rows.extend(_load(alias, cursor.fetchall()))
    rows.sort(key=lambda n: n.pk)
    return rows


def catch_up(bounds: Mapping[int, tuple[int, int]], since: datetime) -> list[Notification]:
    """Claim and return the undispatched rows of these users created since `since`.

    `bounds` maps each user to the ids to take: above the first, up to the second. Oldest
    first. For a user whose first stream opens in a process: what was sent shortly before,
    after the stream's cursor, is delivered live, once.
    """
    if not bounds:
        return []
    alias = database_alias()
    lowest = min(after for after, _ in bounds.values())
    highest = max(up_to for _, up_to in bounds.values())
    candidates: list[int] = []
    for chunk in _chunks(sorted(bounds)):
        rows = (
            Notification.objects.using(alias)
            .filter(
                user_id__in=chunk,
                dispatched=False,
                created__gte=since,
                pk__gt=lowest,
                pk__lte=highest,
            )
            .values_list("pk", "user_id")
        )
        candidates.extend(
            pk for pk, user_id in rows if bounds[user_id][0] < pk <= bounds[user_id][1]
        )
    if not candidates:
        return []
    return claim(candidates)


def notify(channel: str, payload: str) -> None:
    """Send a PostgreSQL NOTIFY on this (possibly pooled) connection."""
    with connections[database_alias()].cursor() as cursor:
        cursor.execute("SELECT pg_notify(%s, %s)", [channel, payload])
