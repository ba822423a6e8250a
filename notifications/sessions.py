"""Who is behind a session: `django.contrib.auth.get_user()` for many sessions at once.

A stream must end when its session does (logout, expiry, deletion, a password change) or its
user is deactivated. Asking `get_user()` per stream per check would be a query per stream;
this reads all sessions in one query and all their users in another, for the database session
engines, and applies the same rules as `get_user()`. It never writes to a session.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Mapping
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
from django.utils import timezone
from django.utils.crypto import constant_time_compare

from .services import CHUNK_SIZE


def session_users(session_keys: Collection[str]) -> dict[str, int]:
    """Return the id of the active user logged in with each session key that is still valid.

    Keys that are unknown, expired, anonymous or no longer valid for their user are left out.
    """
    sessions = _load_sessions(session_keys)
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

    users: dict[tuple[str, Any], Any] = {}
    for backend_path, user_ids in by_backend.items():
        for user in _get_users(backend_path, user_ids):
            users[backend_path, user.pk] = user

    valid = {}
    for key, (user_id, backend_path, session_hash) in claims.items():
        user = users.get((backend_path, user_id))
        if user is not None and _hash_verified(user, session_hash):
            valid[key] = user.pk
    return valid


def _plausible(key: str) -> bool:
    # A cookie can carry anything (Django decodes octal escapes, NUL included); PostgreSQL
    # rejects a NUL with an error, so such a key must not reach a query at all.
    return 0 < len(key) <= 4096 and key.isascii() and key.isprintable() and " " not in key


def _load_sessions(session_keys: Collection[str]) -> dict[str, Mapping[str, Any]]:
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
    now = timezone.now()
    decoder = store_class()
    sessions: dict[str, Mapping[str, Any]] = {}
    for start in range(0, len(keys), CHUNK_SIZE):
        rows = model.objects.filter(
            session_key__in=keys[start : start + CHUNK_SIZE], expire_date__gt=now
        ).values_list("session_key", "session_data")
        for key, session_data in rows:
            sessions[key] = decoder.decode(session_data)
    return sessions


def _get_users(backend_path: str, user_ids: Collection[Any]) -> list[Any]:
    backend = load_backend(backend_path)
    if type(backend).get_user is ModelBackend.get_user:
        assert isinstance(backend, ModelBackend)
        manager = get_user_model()._default_manager
        ids = list(user_ids)
        found: list[Any] = []
        for start in range(0, len(ids), CHUNK_SIZE):
            found.extend(manager.filter(pk__in=ids[start : start + CHUNK_SIZE]))
        return [u for u in found if backend.user_can_authenticate(u)]
    users = (backend.get_user(user_id) for user_id in user_ids)
    return [u for u in users if u is not None]


def _hash_verified(user: Any, session_hash: str) -> bool:
    if not hasattr(user, "get_session_auth_hash"):
        return True
    if not session_hash:
        return False
    if constant_time_compare(session_hash, user.get_session_auth_hash()):
        return True
    return any(
        constant_time_compare(session_hash, fallback)
        for fallback in user.get_session_auth_fallback_hash()
    )
