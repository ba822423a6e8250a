"""The system checks a host site gets from the app (notifications/checks.py)."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.checks import CheckMessage
from django.db import connections
from django.test import override_settings

from notifications import checks


def ids(messages: list[CheckMessage]) -> list[str]:
    return [m.id or "" for m in messages]


def test_daphne_missing_from_installed_apps_warns(settings: Any) -> None:
    settings.INSTALLED_APPS = [a for a in settings.INSTALLED_APPS if a != "daphne"]
    messages = checks.check_server(None)
    assert ids(messages) == ["notifications.W002"]
    assert "not in INSTALLED_APPS" in messages[0].msg


def test_daphne_not_first_warns(settings: Any) -> None:
    apps = [a for a in settings.INSTALLED_APPS if a != "daphne"]
    settings.INSTALLED_APPS = [apps[0], "daphne", *apps[1:]]
    messages = checks.check_server(None)
    assert ids(messages) == ["notifications.W002"]
    assert "not the first entry" in messages[0].msg


def test_missing_asgi_application_warns(settings: Any) -> None:
    del settings.ASGI_APPLICATION
    assert ids(checks.check_server(None)) == ["notifications.W003"]


def test_gzip_middleware_warns(settings: Any) -> None:
    settings.MIDDLEWARE = ["django.middleware.gzip.GZipMiddleware", *settings.MIDDLEWARE]
    assert ids(checks.check_server(None)) == ["notifications.W004"]


def test_this_site_passes_every_check() -> None:
    assert checks.check_server(None) == []
    assert checks.check_urls(None) == []
    assert checks.check_settings(None) == []


def test_sqlite_without_immediate_transactions_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    database = connections["default"].settings_dict
    if database["ENGINE"] != "django.db.backends.sqlite3":
        assert checks.check_database(None) == []
        return
    assert checks.check_database(None) == []
    options = {k: v for k, v in database["OPTIONS"].items() if k != "transaction_mode"}
    monkeypatch.setitem(database, "OPTIONS", options)
    messages = checks.check_database(None)
    assert ids(messages) == ["notifications.W001"]
    assert '"transaction_mode": "IMMEDIATE"' in (messages[0].hint or "")


def test_unmounted_urls_and_an_unserved_login_url_warn() -> None:
    with override_settings(ROOT_URLCONF="tests.urls_without_app", LOGIN_URL="/nowhere/"):
        messages = checks.check_urls(None)
    assert ids(messages) == ["notifications.W005", "notifications.W006"]
    assert "/nowhere/" in messages[1].msg


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("NOTIFICATIONS_POLL_INTERVAL", 0),
        ("NOTIFICATIONS_POLL_INTERVAL", "1"),
        ("NOTIFICATIONS_REPLAY_LIMIT", 1.5),
        ("NOTIFICATIONS_MAX_STREAMS_PER_USER", 0),
        ("NOTIFICATIONS_KEEPALIVE", None),
        ("NOTIFICATIONS_MAX_LENGTH", True),
    ],
)
def test_a_setting_that_is_not_a_number_in_range_is_an_error(
    settings: Any, name: str, value: object
) -> None:
    setattr(settings, name, value)
    messages = checks.check_settings(None)
    assert ids(messages) == ["notifications.E001"]
    assert name in messages[0].msg
