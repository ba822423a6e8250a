"""System checks: what a host site can get wrong that would otherwise fail silently.

Each id is listed, with its fix, in the README ("System checks").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.db import connections, router
from django.shortcuts import resolve_url
from django.urls import NoReverseMatch, Resolver404, resolve, reverse

# Numeric settings and the least value each may take.
_NUMBERS: dict[str, tuple[type, float]] = {
    "NOTIFICATIONS_POLL_INTERVAL": (float, 0.01),
    "NOTIFICATIONS_RECENT_WINDOW": (float, 0),
    "NOTIFICATIONS_KEEPALIVE": (float, 0.1),
    "NOTIFICATIONS_REPLAY_LIMIT": (int, 0),
    "NOTIFICATIONS_RETRY": (int, 0),
    "NOTIFICATIONS_SESSION_CHECK_INTERVAL": (float, 0.01),
    "NOTIFICATIONS_MAX_STREAMS_PER_USER": (int, 1),
    "NOTIFICATIONS_MAX_STREAMS": (int, 0),
    "NOTIFICATIONS_MAX_LENGTH": (int, 1),
    "NOTIFICATIONS_STREAM_MAX_BYTES": (int, 0),
    "NOTIFICATIONS_CHANGE_CHECK_INTERVAL": (float, 0.001),
}


@register(Tags.compatibility)
def check_server(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[CheckMessage]:
    """W002: daphne first in INSTALLED_APPS; W003: ASGI_APPLICATION set; W004: no gzip."""
    messages: list[CheckMessage] = []
    apps = list(settings.INSTALLED_APPS)
    if not apps or apps[0] != "daphne":
        messages.append(
            Warning(
                '"daphne" is not the first entry of INSTALLED_APPS.'
                if "daphne" in apps
                else '"daphne" is not in INSTALLED_APPS.',
                hint='Put "daphne" first in INSTALLED_APPS: `manage.py runserver` is then '
                "daphne's ASGI server. Without it, runserver serves WSGI, which buffers a "
                "notification stream whole: nothing arrives.",
                id="notifications.W002",
            )
        )
    if not getattr(settings, "ASGI_APPLICATION", None):
        messages.append(
            Warning(
                "ASGI_APPLICATION is not set.",
                hint='Set ASGI_APPLICATION = "<your project>.asgi.application": daphne\'s '
                "runserver serves that application.",
                id="notifications.W003",
            )
        )
    if "django.middleware.gzip.GZipMiddleware" in settings.MIDDLEWARE:
        messages.append(
            Warning(
                "GZipMiddleware compresses the notification stream.",
                hint="It compresses each event as a gzip member of its own, and clients then "
                "see only the first event. Compress in the proxy instead, excluding "
                "text/event-stream, or remove GZipMiddleware.",
                id="notifications.W004",
            )
        )
    return messages


@register(Tags.database)
def check_database(
    app_configs: Sequence[AppConfig] | None, databases: Sequence[str] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """W001: SQLite must take the write lock up front (transaction_mode IMMEDIATE)."""
    from .models import Notification

    alias = router.db_for_write(Notification) or "default"
    database = connections[alias].settings_dict
    if database.get("ENGINE") != "django.db.backends.sqlite3":
        return []
    if database.get("OPTIONS", {}).get("transaction_mode") == "IMMEDIATE":
        return []
    return [
        Warning(
            f'The SQLite database "{alias}" does not use transaction_mode "IMMEDIATE".',
            hint="Claiming a notification reads then writes; in a DEFERRED transaction it can "
            'fail with "database is locked" whatever the timeout. Set DATABASES["'
            f'{alias}"]["OPTIONS"] = {{"transaction_mode": "IMMEDIATE", "timeout": 20, '
            '"init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"}.',
            id="notifications.W001",
        )
    ]


@register(Tags.urls)
def check_urls(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[CheckMessage]:
    """W005: the app's URLs are mounted; W006: LOGIN_URL is served by the site."""
    messages: list[CheckMessage] = []
    try:
        reverse("notifications:stream")
    except NoReverseMatch:
        messages.append(
            Warning(
                "The notifications app's URLs are not in the URLconf.",
                hint='Add path("notifications/", include("notifications.urls")) to the '
                "site's urlpatterns: the page and the bell need the stream's URL.",
                id="notifications.W005",
            )
        )
    login_url = str(resolve_url(settings.LOGIN_URL))
    if login_url.startswith("/") and not login_url.startswith("//"):
        try:
            resolve(login_url.split("?", 1)[0])
        except Resolver404:
            messages.append(
                Warning(
                    f"LOGIN_URL ({login_url}) is not served by any URL pattern.",
                    hint="Signed-out visitors of the notifications page are sent there. "
                    'Set LOGIN_URL to the site\'s login page (e.g. "admin:login"), or add '
                    'path("accounts/", include("django.contrib.auth.urls")).',
                    id="notifications.W006",
                )
            )
    return messages


@register()
def check_settings(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[CheckMessage]:
    """E001: every NOTIFICATIONS_* number is a number, at least its least value."""
    messages: list[CheckMessage] = []
    for name, (kind, least) in _NUMBERS.items():
        if not hasattr(settings, name):
            continue
        value = getattr(settings, name)
        try:
            ok = not isinstance(value, bool) and kind(value) == value and value >= least
        except (TypeError, ValueError):
            ok = False
        if not ok:
            what = "a whole number" if kind is int else "a number"
            messages.append(
                Error(
                    f"{name} is {value!r}; it must be {what} of at least {least:g}.",
                    id="notifications.E001",
                )
            )
    return messages
