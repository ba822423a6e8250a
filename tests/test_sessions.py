from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any, TypeVar

import pytest
from django.contrib.auth.models import AbstractUser
from django.contrib.sessions.models import Session
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from notifications.models import Notification
from notifications.sessions import SessionCache, change_token, fingerprints, session_users

from .support import make_user, session_for

pytestmark = pytest.mark.django_db(transaction=True)

T = TypeVar("T")


def test_valid_sessions_map_to_their_users(alice: AbstractUser, bob: AbstractUser) -> None:
    a1, a2, b = session_for(alice), session_for(alice), session_for(bob)
    assert session_users([a1, a2, b]) == {a1: alice.pk, a2: alice.pk, b: bob.pk}


def test_unknown_empty_and_anonymous_sessions_are_left_out(alice: AbstractUser) -> None:
    from django.contrib.sessions.backends.db import SessionStore

    anonymous = SessionStore()
    anonymous["cart"] = 1
    anonymous.create()
    assert anonymous.session_key is not None
    assert session_users(["nope", "", anonymous.session_key]) == {}


def test_deleted_session_is_invalid(alice: AbstractUser) -> None:
    key = session_for(alice)
    Session.objects.filter(session_key=key).delete()
    assert session_users([key]) == {}


def test_expired_session_is_invalid(alice: AbstractUser) -> None:
    key = session_for(alice)
    Session.objects.filter(session_key=key).update(expire_date=timezone.now() - timedelta(1))
    assert session_users([key]) == {}


def test_deactivated_user_is_invalid(alice: AbstractUser) -> None:
    key = session_for(alice)
    alice.is_active = False
    alice.save()
    assert session_users([key]) == {}


def test_password_change_ends_other_sessions(alice: AbstractUser) -> None:
    key = session_for(alice)
    alice.set_password("a new password")
    alice.save()
    assert session_users([key]) == {}


def test_secret_key_fallback_still_verifies(alice: AbstractUser, settings: object) -> None:
    key = session_for(alice)
    old = settings.SECRET_KEY  # type: ignore[attr-defined]
    settings.SECRET_KEY = "a rotated secret key that is long enough"  # type: ignore[attr-defined]
    settings.SECRET_KEY_FALLBACKS = [old]  # type: ignore[attr-defined]
    assert session_users([key]) == {key: alice.pk}


def test_many_sessions_cost_two_queries(alice: AbstractUser) -> None:
    users = [make_user(f"u{i}") for i in range(30)]
    keys = [session_for(u) for u in users]
    with CaptureQueriesContext(connection) as queries:
        valid = session_users(keys)
    assert valid == {k: u.pk for k, u in zip(keys, users, strict=True)}
    assert len(queries) == 2


def _delete(alice: AbstractUser, key: str) -> None:
    Session.objects.filter(session_key=key).delete()


def _expire(alice: AbstractUser, key: str) -> None:
    Session.objects.filter(session_key=key).update(expire_date=timezone.now() - timedelta(1))


def _deactivate(alice: AbstractUser, key: str) -> None:
    alice.is_active = False
    alice.save()


def _change_password(alice: AbstractUser, key: str) -> None:
    alice.set_password("a new password")
    alice.save()


class HubThread:
    """Checks with a cache, on a connection of their own, as the hub's worker thread does
    (SQLite's data_version only moves for commits by other connections)."""

    def __init__(self) -> None:
        self.cache = SessionCache()
        # The users of the streams checked (the hub passes them to fingerprints()).
        self.users: set[int] = set()
        self._pool = ThreadPoolExecutor(1)

    def check(self, keys: list[str]) -> tuple[dict[str, int], list[str]]:
        """Check in the thread; return the answer and the statements it ran."""
        return self.run(lambda: self.check_here(keys))

    def check_here(self, keys: list[str]) -> tuple[dict[str, int], list[str]]:
        """Check as the hub's session checker does: the token, a fingerprint where the token
        moved or a key is new, then the check (in the calling thread: see run())."""
        statements: list[str] = []

        def record(execute: Any, sql: str, *args: Any) -> Any:
            statements.append(sql)
            return execute(sql, *args)

        with connection.execute_wrapper(record):
            token = change_token()
            digest = None
            if token is not None and (self.cache.token != token or set(keys) - self.cache.keys):
                [digest] = fingerprints([(keys, self.users | self.cache.user_ids())])
            valid = session_users(keys, cache=self.cache, token=token, fingerprint=digest)
            return valid, statements

    def run(self, work: Callable[[], T]) -> T:
        """Run `work` in the thread, on its connection."""
        return self._pool.submit(work).result(10)

    def close(self) -> None:
        self._pool.submit(lambda: connection.close()).result(10)
        self._pool.shutdown()


def _full_check_statements() -> int:
    """The change token, the fingerprint (PostgreSQL only), the sessions and the users."""
    return 4 if connection.vendor == "postgresql" else 3


@pytest.fixture
def hub_thread() -> Iterator[HubThread]:
    thread = HubThread()
    yield thread
    thread.close()


@pytest.mark.parametrize("change", [_delete, _expire, _deactivate, _change_password])
def test_a_warm_cache_still_sees_every_change(
    alice: AbstractUser, change: object, hub_thread: HubThread
) -> None:
    key = session_for(alice)
    assert hub_thread.check([key])[0] == {key: alice.pk}

    change(alice, key)  # type: ignore[operator]

    assert hub_thread.check([key])[0] == {}


@pytest.mark.postgresql
@pytest.mark.parametrize("change", [_delete, _expire, _deactivate, _change_password])
def test_commits_elsewhere_cost_a_fingerprint_and_a_change_is_still_seen(
    alice: AbstractUser, bob: AbstractUser, change: object, hub_thread: HubThread
) -> None:
    key = session_for(alice)
    hub_thread.users = {alice.pk}
    assert hub_thread.check([key])[0] == {key: alice.pk}  # a full check, with a digest

    Notification.objects.create(user=bob, text="a commit elsewhere")
    valid, statements = hub_thread.check([key])

    assert valid == {key: alice.pk}
    assert len(statements) == 2, statements  # the change token and the fingerprint
    assert not any("session_data" in sql or "password" in sql for sql in statements)

    change(alice, key)  # type: ignore[operator]

    assert hub_thread.check([key])[0] == {}


@pytest.mark.parametrize("failing", ["session_data", '"password"'])
def test_a_check_that_fails_half_way_leaves_no_answer_standing(
    alice: AbstractUser,
    bob: AbstractUser,
    failing: str,
    hub_thread: HubThread,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from django.db import DatabaseError

    from notifications import sessions

    soon, later = session_for(alice), session_for(alice)
    Session.objects.filter(session_key=soon).update(expire_date=timezone.now() + timedelta(1))
    hub_thread.users = {alice.pk}
    assert hub_thread.check([soon, later])[0] == {soon: alice.pk, later: alice.pk}
    # `soon` expires by time, so the next check is a full one; its sessions query (or its
    # users query) fails.
    in_two_days = timezone.now() + timedelta(days=2)
    monkeypatch.setattr(sessions.timezone, "now", lambda: in_two_days)

    def fail(execute: Any, sql: str, *args: Any) -> Any:
        if failing in sql:
            raise DatabaseError("statement timeout (simulated)")
        return execute(sql, *args)

    def failed_check() -> None:
        with connection.execute_wrapper(fail):
            hub_thread.check_here([soon, later])

    with pytest.raises(DatabaseError):
        hub_thread.run(failed_check)
    Notification.objects.create(user=bob, text="a commit elsewhere")  # the token moves

    assert hub_thread.check([soon, later])[0] == {later: alice.pk}


@pytest.mark.postgresql
def test_a_fingerprint_moves_with_its_own_sessions_and_users_only(
    alice: AbstractUser, bob: AbstractUser
) -> None:
    mine, theirs = session_for(alice), session_for(bob)
    before = fingerprints([([mine], [alice.pk])])

    bob.set_password("another password")
    bob.save()
    Session.objects.filter(session_key=theirs).delete()
    assert fingerprints([([mine], [alice.pk])]) == before

    alice.last_login = timezone.now()  # any change to the user's row
    alice.save()
    assert fingerprints([([mine], [alice.pk])]) != before


@pytest.mark.sqlite
def test_without_postgresql_there_is_no_fingerprint(alice: AbstractUser) -> None:
    key = session_for(alice)
    assert fingerprints([([key], [alice.pk]), ([], [])]) == [None, None]


def test_a_warm_cache_decodes_changed_session_data_again(
    alice: AbstractUser, bob: AbstractUser, hub_thread: HubThread
) -> None:
    key = session_for(alice)
    assert hub_thread.check([key])[0] == {key: alice.pk}
    bobs = Session.objects.get(session_key=session_for(bob))

    Session.objects.filter(session_key=key).update(session_data=bobs.session_data)

    assert hub_thread.check([key])[0] == {key: bob.pk}


def test_when_nothing_changed_a_check_reads_no_session_and_no_user(
    alice: AbstractUser, bob: AbstractUser, hub_thread: HubThread
) -> None:
    keys = [session_for(alice), session_for(bob)]
    first, statements = hub_thread.check(keys)
    assert first == {keys[0]: alice.pk, keys[1]: bob.pk}
    # The change token, (on PostgreSQL) the fingerprint, the sessions, the users.
    assert len(statements) == _full_check_statements()

    # PostgreSQL's token is its write-ahead log position, which background writers (a
    # checkpoint, autovacuum) may move too: one quiet check out of five is enough.
    for _ in range(5):
        again, statements = hub_thread.check(keys)
        assert again == first
        if len(statements) == 1:
            break
    assert len(statements) == 1  # the change token only
    assert "session" not in statements[0] and "auth_user" not in statements[0]


def test_a_session_that_expires_without_any_write_is_still_noticed(
    alice: AbstractUser, hub_thread: HubThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    from notifications import sessions

    key = session_for(alice)
    assert hub_thread.check([key])[0] == {key: alice.pk}
    later = timezone.now() + timedelta(days=15)  # past the default two-week expiry

    monkeypatch.setattr(sessions.timezone, "now", lambda: later)

    assert hub_thread.check([key])[0] == {}


def test_a_new_key_is_checked_in_full(
    alice: AbstractUser, bob: AbstractUser, hub_thread: HubThread
) -> None:
    known = session_for(alice)
    new = session_for(bob)
    assert hub_thread.check([known])[0] == {known: alice.pk}

    valid, statements = hub_thread.check([known, new])

    assert valid == {known: alice.pk, new: bob.pk}
    assert len(statements) == _full_check_statements()


def test_more_sessions_than_sqlites_old_parameter_limit_still_cost_two_queries(
    alice: AbstractUser,
) -> None:
    from django.contrib.auth import get_user_model

    users = get_user_model().objects.bulk_create(
        [get_user_model()(username=f"many{i}", password="!") for i in range(1200)]
    )
    keys = [session_for(u) for u in users[:3]]
    unknown = [f"unknown{i:04d}" for i in range(1200)]
    with CaptureQueriesContext(connection) as queries:
        valid = session_users(keys + unknown)
    assert valid == {k: u.pk for k, u in zip(keys, users, strict=False)}
    assert len(queries) == 2
