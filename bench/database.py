"""The benchmark's database: created afresh, filled with users and sessions made directly."""

from __future__ import annotations

import secrets
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from tools.daphne_runner import PROJECT


@dataclass
class Database:
    """Where the bench process and the servers connect."""

    vendor: str  # "sqlite" or "postgresql"
    url: str  # the bench process's own URL
    server_url: str  # the servers' URL (application_name is added per server)
    name: str  # the SQLite file, or the PostgreSQL database name
    admin_url: str = ""  # PostgreSQL: the maintenance database, to drop what was created
    role: str = ""

    def for_server(self, application_name: str) -> str:
        if self.vendor != "postgresql":
            return self.server_url
        separator = "&" if "?" in self.server_url else "?"
        return f"{self.server_url}{separator}application_name={quote(application_name)}"


def _pg_connect(url: str) -> object:
    import psycopg

    parts = urlsplit(url)
    return psycopg.connect(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 5432,
        user=unquote(parts.username or "postgres"),
        password=unquote(parts.password or ""),
        dbname="postgres",
        autocommit=True,
        connect_timeout=10,
    )


def create(url: str | None, tmp: Path, connection_limit: int) -> Database:
    """Create an empty database (dropping a PostgreSQL one of the same name) and migrate it.

    On PostgreSQL the servers log in as a role of their own, limited to `connection_limit`
    connections (0: no limit), so a design that opens a connection per stream fails at that
    limit instead of taking every connection of a server others share.
    """
    if not url:
        path = tmp / "bench.sqlite3"
        url = f"sqlite:///{path}"
        database = Database("sqlite", url, url, str(path))
    elif url.startswith("sqlite"):
        path = Path(urlsplit(url).path)
        if not path.name.startswith("bench"):
            raise SystemExit(
                f"The benchmark deletes and recreates its SQLite file; {path.name!r} does not "
                "start with 'bench'. Name one that does, or leave DATABASE_URL unset."
            )
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        database = Database("sqlite", url, url, str(path))
    elif url.startswith(("postgres://", "postgresql://")):
        database = _create_postgresql(url, connection_limit)
    else:
        raise SystemExit(f"DATABASE_URL must be sqlite:// or postgres://, not {url!r}")
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=PROJECT,
        check=True,
        env={**_environ(), "DATABASE_URL": database.server_url},
    )
    return database


def _environ() -> dict[str, str]:
    import os

    return dict(os.environ)


def _create_postgresql(url: str, connection_limit: int) -> Database:
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    if not name.startswith("bench"):
        raise SystemExit(
            f"The benchmark drops and recreates its database; {name!r} does not start with "
            "'bench'. Name one that does, e.g. postgres://postgres@127.0.0.1:5432/bench_notifications"
        )
    role = name
    password = secrets.token_hex(16)
    limit = connection_limit if connection_limit > 0 else -1
    conn = _pg_connect(url)
    with conn:  # type: ignore[attr-defined]
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[attr-defined]
        conn.execute(f'DROP ROLE IF EXISTS "{role}"')  # type: ignore[attr-defined]
        conn.execute(  # type: ignore[attr-defined]
            f"CREATE ROLE \"{role}\" LOGIN PASSWORD '{password}' CONNECTION LIMIT {limit}"
        )
        conn.execute(f'CREATE DATABASE "{name}" OWNER "{role}"')  # type: ignore[attr-defined]
    host = parts.hostname or "127.0.0.1"
    netloc = f"{quote(role)}:{password}@{host}:{parts.port or 5432}"
    server_url = urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    return Database("postgresql", urlunsplit(parts._replace(query="")), server_url, name, url, role)


def drop(database: Database) -> None:
    """Drop the PostgreSQL database and role the benchmark created (SQLite: nothing to do)."""
    if database.vendor != "postgresql":
        return
    conn = _pg_connect(database.admin_url)
    with conn:  # type: ignore[attr-defined]
        conn.execute(f'DROP DATABASE IF EXISTS "{database.name}" WITH (FORCE)')  # type: ignore[attr-defined]
        conn.execute(f'DROP ROLE IF EXISTS "{database.role}"')  # type: ignore[attr-defined]


def make_sessions(count: int, prefix: str = "bench") -> list[tuple[int, str]]:
    """Create `count` users with a logged-in session each, without hashing passwords.

    Return (user id, session key) pairs.
    """
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.auth.models import User
    from django.contrib.sessions.backends.db import SessionStore
    from django.contrib.sessions.models import Session
    from django.utils import timezone
    from django.utils.crypto import get_random_string

    tag = get_random_string(6)
    users = User.objects.bulk_create(
        [User(username=f"{prefix}-{tag}-{i}", password="!") for i in range(count)],
        batch_size=1000,
    )
    store = SessionStore()
    expire = timezone.now() + timedelta(days=1)
    sessions = []
    rows = []
    for user in users:
        key = get_random_string(32, "abcdefghijklmnopqrstuvwxyz0123456789")
        data = store.encode(
            {
                SESSION_KEY: str(user.pk),
                BACKEND_SESSION_KEY: "django.contrib.auth.backends.ModelBackend",
                HASH_SESSION_KEY: user.get_session_auth_hash(),
            }
        )
        rows.append(Session(session_key=key, session_data=data, expire_date=expire))
        sessions.append((user.pk, key))
    Session.objects.bulk_create(rows, batch_size=1000)
    return sessions


def make_staff_session() -> str:
    """Create a superuser with a logged-in session; return the session key."""
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.auth.models import User
    from django.contrib.sessions.backends.db import SessionStore

    user = User.objects.create(
        username=f"bench-admin-{secrets.token_hex(3)}",
        password="!",
        is_staff=True,
        is_superuser=True,
    )
    store = SessionStore()
    store[SESSION_KEY] = str(user.pk)
    store[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    store[HASH_SESSION_KEY] = user.get_session_auth_hash()
    store.create()
    assert store.session_key is not None
    return store.session_key


def version() -> str:
    from django.db import connection

    if connection.vendor == "sqlite":
        import sqlite3

        return f"SQLite {sqlite3.sqlite_version}"
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        return f"PostgreSQL {cursor.fetchone()[0]}"
