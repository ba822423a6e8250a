"""Who is behind a session: `django.contrib.auth.get_user()` for many sessions at once.

A stream must end when its session does (logout, expiry, deletion, a password change) or its
user is deactivated. Asking `get_user()` per stream per check would be a query per stream;
this reads all sessions in one query and all their users in another, for the database session
engines, and applies the same rules as `get_user()`. It never writes to a session. Like
`get_user()`, it reads sessions and users from the databases the router picks for reading them.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from importlib import import_module
from typing import Any

from django.conf import settings
from django.contrib.auth import (
    BACKEND_SESSION_KEY,
    HASH_SESSION_KEY,
    SESSION_KEY,
    get_user_model,
    load_backend,
)
from django.contrib.auth.backends import ModelBackend
from django.contrib.sessions.backends.base import SessionBase
from django.contrib.sessions.backends.db import SessionStore as DatabaseSessionStore
from django.contrib.sessions.base_session import AbstractBaseSession
from django.db import connections, router
from django.db.models.expressions import RawSQL
from django.utils import timezone
from django.utils.crypto import constant_time_compare

# SQLite's change counter; the hub reads it too, and counts it apart from queries.
DATA_VERSION = "PRAGMA data_version"


def _session_model() -> type[AbstractBaseSession] | None:
    """Return the session model of a database session engine; None for other engines."""
    store_class: type[SessionBase] = import_module(settings.SESSION_ENGINE).SessionStore
    if not issubclass(store_class, DatabaseSessionStore):
        return None
    return store_class.get_model_class()


def database_aliases() -> list[str]:
    """Return the databases a check reads: the sessions' (for a database engine), the users'."""
    session_model = _session_model()
    users = router.db_for_read(get_user_model())
    if session_model is None:
        return [users]
    return list(dict.fromkeys([router.db_for_read(session_model), users]))


class SessionCache:
    """What the last check decoded and derived, so the next one only redoes what changed.

    Decoding a session (a signature check and JSON) and deriving a user's session hash (an
    HMAC) cost microseconds each, which thousands of streams checked every few seconds turn
    into a busy core. Entries are keyed by the raw session data and the raw user row, so a
    changed session or user is always judged afresh; each check keeps only what it saw.
    """

    def __init__(self) -> None:
        self.sessions: dict[str, tuple[str, Mapping[str, Any]]] = {}
        self.users: dict[Any, tuple[tuple[Any, ...], frozenset[str] | None]] = {}
        # The last full check: the database's change token read before it, the keys it
        # checked, its answer, and when the first of the sessions it read expires.
        self.token: Any = None
        self.keys: frozenset[str] = frozenset()
        self.valid: dict[str, int] = {}
        self.earliest_expiry: datetime | None = None
        # fingerprints()'s digest of the rows the last full check read, read before it (None
        # until a check had one).
        self.fingerprint: str | None = None

    def user_ids(self) -> set[Any]:
        """The ids of the users the last full check read."""
        return {pk for _, pk in self.users}


# session_users(): read the database's change token in this call.
READ_TOKEN: Any = object()


def session_users(
    session_keys: Collection[str],
    cache: SessionCache | None = None,
    *,
    token: Any = READ_TOKEN,
    fingerprint: str | None = None,
) -> dict[str, int]:
    """Return the id of the active user logged in with each session key that is still valid.

    Keys that are unknown, expired, anonymous or no longer valid for their user are left out.
    Pass the same `cache` to repeated checks of the same keys to make them cheap: when nothing
    was committed to the database since the last check, no session has expired since, and no
    key is new, the last answer stands without reading a session or a user.

    `token`: the value of change_token() read before this call, for a check split into parts
    that share one reading of it (READ_TOKEN: this call reads it).

    `fingerprint`: what fingerprints() read for these keys and this cache before this call.
    When the token moved (anything was committed) but the fingerprint is the one read before
    the last full check, none of these sessions and none of their users changed: the last
    answer stands too.
    """
    if cache is None:
        return _check(session_keys, SessionCache())
    keys = frozenset(session_keys)
    if token is READ_TOKEN:
        token = change_token()
    if (
        token is not None
        and keys <= cache.keys
        and (cache.earliest_expiry is None or timezone.now() < cache.earliest_expiry)
        and (token == cache.token or (fingerprint is not None and fingerprint == cache.fingerprint))
    ):
        cache.token = token
        return {k: cache.valid[k] for k in keys if k in cache.valid}
    # Forget the last answer first: _check() rewrites parts of the cache as it reads (the
    # decoded sessions, the earliest expiry), and a check that fails half way must not leave
    # the old answer standing behind a token or a fingerprint that still matches.
    cache.token, cache.keys, cache.fingerprint = None, frozenset(), None
    valid = _check(keys, cache)
    cache.token, cache.keys, cache.valid = token, keys, valid
    cache.fingerprint = fingerprint
    return valid


def fingerprints(parts: Sequence[tuple[Collection[str], Collection[Any]]]) -> list[str | None]:
    """Return, for each part of a check (session keys, user ids), a digest of the row versions
    of those sessions and users; None where the database offers none (all but PostgreSQL).

    The user ids are those the sessions log in: the hub passes its streams' users and those
    the part's last check read (SessionCache.user_ids()). A check whose answer depends on a
    user outside them read that user, so the next digest covers another set of users, and
    differs.

    On PostgreSQL a row's `xmin` (the transaction that wrote this version of it) and `ctid`
    (where the version lies) change whenever the row is updated; a deleted row drops out.
    So the digest moves with every change to these sessions and users, and with nothing
    else: a commit elsewhere (a notification, another user's login) leaves it. One query for
    every part: a check of thousands of sessions while rows flow costs it, not a reading of
    every session and user. Call it only where change_token() gives a token (the sessions and
    users in one database, judged by their rows alone).
    """
    session_model = _session_model()
    if session_model is None or not parts:
        return [None] * len(parts)
    alias = router.db_for_read(session_model)
    connection = connections[alias]
    if connection.vendor != "postgresql":
        return [None] * len(parts)
    user_model = get_user_model()
    if user_model._meta.get_parent_list() or session_model._meta.get_parent_list():
        # Multi-table inheritance: the password or is_active may live in a parent's table,
        # which the digest of the model's own rows does not see. Every check reads in full.
        return [None] * len(parts)
    user_pk = user_model._meta.pk
    session_pk = session_model._meta.pk
    assert user_pk is not None and session_pk is not None
    keys: list[str] = []
    key_parts: list[int] = []
    user_ids: list[str] = []
    user_parts: list[int] = []
    for number, (part_keys, part_users) in enumerate(parts):
        for key in part_keys:
            if _plausible(key):
                keys.append(key)
                key_parts.append(number)
        for pk in set(part_users):
            # As text, cast back in the query to the key column's type (cast_db_type).
            user_ids.append(str(user_pk.get_db_prep_value(pk, connection, prepared=False)))
            user_parts.append(number)
    quote = connection.ops.quote_name
    assert session_pk.column is not None and user_pk.column is not None
    key_column, user_column = quote(session_pk.column), quote(user_pk.column)
    sql = f"""
        SELECT part, md5(string_agg(version, ',' ORDER BY version)) FROM (
            SELECT k.part::int AS part, 's' || s.{key_column}::text || '/' || s.xmin::text
                   || '/' || s.ctid::text AS version
              FROM ROWS FROM (
                     json_array_elements_text(%s::json), json_array_elements_text(%s::json)
                   ) AS k(key, part)
              JOIN {quote(session_model._meta.db_table)} AS s
                ON s.{key_column} = k.key
            UNION ALL
            SELECT u.part::int, 'u' || t.{user_column}::text || '/' || t.xmin::text
                   || '/' || t.ctid::text
              FROM ROWS FROM (
                     json_array_elements_text(%s::json), json_array_elements_text(%s::json)
                   ) AS u(id, part)
              JOIN {quote(user_model._meta.db_table)} AS t
                ON t.{user_column} = u.id::{user_pk.cast_db_type(connection)}
        ) AS versions
        GROUP BY part
    """
    # The lists go as JSON text, which ROWS FROM zips back into pairs: psycopg adapts a
    # Python list element by element in Python, tens of milliseconds for the ten thousands
    # of a check of every stream, and the event loop waits for that time; json.dumps is C.
    params = [json.dumps(keys), json.dumps(key_parts), json.dumps(user_ids), json.dumps(user_parts)]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        found = dict(cursor.fetchall())
    # A part with no row left at all has a digest too: the empty one.
    return [found.get(number, "") for number in range(len(parts))]


def change_token() -> Any:
    """Return a value that changes whenever anything is committed to the database.

    None when there is no such value, or when a session's validity can depend on something
    outside the database (a cache session engine, a backend with its own get_user()).
    """
    session_model = _session_model()
    if session_model is None:
        return None
    for backend_path in settings.AUTHENTICATION_BACKENDS:
        if type(load_backend(backend_path)).get_user is not ModelBackend.get_user:
            return None
    alias = router.db_for_read(session_model)
    if router.db_for_read(get_user_model()) != alias:
        # One database's token says nothing of the other's changes.
        return None
    connection = connections[alias]
    if connection.vendor == "sqlite":
        # Changes when another connection commits; this connection writes no session.
        sql = DATA_VERSION
    elif connection.vendor == "postgresql":
        # Moves with every write to the cluster's write-ahead log.
        sql = "SELECT pg_current_wal_lsn()"
    else:
        return None
    with connection.cursor() as cursor:
        cursor.execute(sql)
        row = cursor.fetchone()
    return row[0] if row else None


def _check(session_keys: Collection[str], cache: SessionCache) -> dict[str, int]:
    sessions = _load_sessions(session_keys, cache)
    previous_users, cache.users = cache.users, {}
    claims: dict[str, tuple[Any, str, str]] = {}
    by_backend: dict[str, set[Any]] = defaultdict(set)
    user_pk = get_user_model()._meta.pk
    assert user_pk is not None
    for key, data in sessions.items():
        try:
            user_id = user_pk.to_python(data[SESSION_KEY])
            backend_path = data[BACKEND_SESSION_KEY]
        except (KeyError, ValueError, TypeError):
            continue
        if backend_path not in settings.AUTHENTICATION_BACKENDS:
            continue
        claims[key] = (user_id, backend_path, data.get(HASH_SESSION_KEY) or "")
        by_backend[backend_path].add(user_id)

    # For each (backend, user id): the session hashes that are valid for the user, or None
    # for a user who may not log in (or has no session hash at all: any session is valid).
    hashes: dict[tuple[str, Any], frozenset[str] | None] = {}
    for backend_path, user_ids in by_backend.items():
        for pk, valid_hashes in _user_hashes(backend_path, user_ids, previous_users, cache).items():
            hashes[backend_path, pk] = valid_hashes

    valid = {}
    for key, (user_id, backend_path, session_hash) in claims.items():
        if (backend_path, user_id) not in hashes:
            continue
        valid_hashes = hashes[backend_path, user_id]
        if valid_hashes is None or any(
            constant_time_compare(session_hash, h) for h in valid_hashes
        ):
            valid[key] = user_id
    return valid


def _one_of(field: Any, values: list[Any], alias: str) -> Any:
    """Return `values` as the right side of an `__in` lookup that binds one parameter.

    A list binds a parameter per value, which SQLite limits and Django's ORM spends
    microseconds on each; thousands of streams are checked every few seconds. `alias` is the
    database the lookup runs on.
    """
    connection = connections[alias]
    if connection.vendor == "sqlite":
        return RawSQL("SELECT value FROM json_each(%s)", [json.dumps(values)])
    if connection.vendor == "postgresql":
        return RawSQL(f"SELECT unnest(%s::{field.cast_db_type(connection)}[])", [values])
    return values


def _plausible(key: str) -> bool:
    # A cookie can carry anything (Django decodes octal escapes, NUL included); PostgreSQL
    # rejects a NUL with an error, so such a key must not reach a query at all.
    return 0 < len(key) <= 4096 and key.isascii() and key.isprintable() and " " not in key


def _load_sessions(
    session_keys: Collection[str], cache: SessionCache
) -> dict[str, Mapping[str, Any]]:
    engine = import_module(settings.SESSION_ENGINE)
    store_class: type[SessionBase] = engine.SessionStore
    keys = [k for k in set(session_keys) if _plausible(k)]
    if not keys:
        return {}
    if not issubclass(store_class, DatabaseSessionStore):
        # Cache and cookie engines: nothing to batch, and no database query per key.
        loaded = {k: store_class(session_key=k).load() for k in keys}
        return {k: data for k, data in loaded.items() if data}
    model = store_class.get_model_class()
    alias = router.db_for_read(model)
    now = timezone.now()
    decoder = store_class()
    seen = cache.sessions
    cache.sessions = {}
    cache.earliest_expiry = None
    sessions: dict[str, Mapping[str, Any]] = {}
    rows = (
        model.objects.using(alias)
        .filter(session_key__in=_one_of(model._meta.pk, keys, alias), expire_date__gt=now)
        .values_list("session_key", "session_data", "expire_date")
    )
    for key, session_data, expire_date in rows:
        if cache.earliest_expiry is None or expire_date < cache.earliest_expiry:
            cache.earliest_expiry = expire_date
        known = seen.get(key)
        if known is None or known[0] != session_data:
            # A new entry only for what changed: fewer objects for the garbage collector.
            known = (session_data, decoder.decode(session_data))
        cache.sessions[key] = known
        sessions[key] = known[1]
    return sessions


def _user_hashes(
    backend_path: str,
    user_ids: Collection[Any],
    seen: dict[Any, tuple[tuple[Any, ...], frozenset[str] | None]],
    cache: SessionCache,
) -> dict[Any, frozenset[str] | None]:
    """Return, for each user the backend still lets in, the session hashes valid for them."""
    backend = load_backend(backend_path)
    if type(backend).get_user is not ModelBackend.get_user:
        users = (backend.get_user(user_id) for user_id in user_ids)
        return {u.pk: _valid_hashes(u) for u in users if u is not None}
    assert isinstance(backend, ModelBackend)
    model = get_user_model()
    alias = router.db_for_read(model)
    manager = model._default_manager.db_manager(alias)
    pk_field = model._meta.pk
    assert pk_field is not None
    # What ModelBackend and AbstractBaseUser judge by: the password (the session hash) and
    # is_active. Other fields are deferred: a user model whose rules read them loads them.
    fields = [pk_field.attname, "password"]
    if any(f.attname == "is_active" for f in model._meta.concrete_fields):
        fields.append("is_active")
    ids = [pk_field.get_db_prep_value(pk, connections[alias], prepared=False) for pk in user_ids]
    found: dict[Any, frozenset[str] | None] = {}
    for row in manager.filter(pk__in=_one_of(pk_field, ids, alias)).values_list(*fields):
        pk = row[0]
        known = seen.get((backend_path, pk))
        if known is None or known[0] != row:
            user = model.from_db(alias, fields, row)
            known = (row, _valid_hashes(user) if backend.user_can_authenticate(user) else _REFUSED)
        cache.users[backend_path, pk] = known
        verdict = known[1]
        if verdict is not _REFUSED:
            found[pk] = verdict
    return found


# A user the backend does not let in.
_REFUSED: frozenset[str] = frozenset(["<refused>"])


def _valid_hashes(user: Any) -> frozenset[str] | None:
    """Return the session hashes valid for the user; None when the user model has none."""
    if not hasattr(user, "get_session_auth_hash"):
        return None
    return frozenset([user.get_session_auth_hash(), *user.get_session_auth_fallback_hash()])
