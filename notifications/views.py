from __future__ import annotations

import logging
import re
from urllib.parse import urlencode

from django.conf import settings
from django.contrib.auth import REDIRECT_FIELD_NAME
from django.contrib.auth.decorators import login_required
from django.db import DatabaseError
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    HttpResponseForbidden,
    StreamingHttpResponse,
)
from django.shortcuts import render, resolve_url
from django.urls import reverse
from django.views.decorators.http import require_safe

from . import queries
from .hub import StreamRefused, get_hub
from .stream import NotificationStream

logger = logging.getLogger(__name__)

HISTORY_LIMIT = 50

_ID = re.compile(r"[0-9]{1,19}")
_MAX_ID = 2**63 - 1

TEXT_PLAIN = "text/plain; charset=utf-8"
EVENT_STREAM = "text/event-stream; charset=utf-8"


@login_required
def page(request: HttpRequest) -> HttpResponse:
    assert request.user.pk is not None
    # Every row up to `up_to` is shown or was not the user's: the stream resumes from there.
    notifications, up_to = queries.history(request.user.pk, HISTORY_LIMIT)
    # `user`: a page left open while someone else signs in on the same browser must not
    # show that person's notifications under this user's name.
    query = urlencode({"last_event_id": up_to, "user": request.user.pk})
    stream_url = f"{reverse('notifications:stream')}?{query}"
    return render(
        request,
        "notifications/page.html",
        {
            "notifications": notifications,
            "stream_url": stream_url,
            # Where "Signed out" links to: the host's LOGIN_URL, back to this page after.
            "login_url": login_url(request.get_full_path()),
        },
    )


def login_url(next_path: str) -> str:
    """Return the site's login URL (settings.LOGIN_URL) with `next` set to `next_path`."""
    return f"{resolve_url(settings.LOGIN_URL)}?{urlencode({REDIRECT_FIELD_NAME: next_path})}"


def parse_last_event_id(request: HttpRequest) -> int | None:
    """Return the stream's resume cursor: the Last-Event-ID header, else the query parameter.

    Raise ValueError with a message for the client when it is not a notification id.
    """
    value = request.headers.get("Last-Event-ID", "").strip()
    if value:
        return _parse_id(value, "The Last-Event-ID header", "a notification id")
    return _parse_id(
        request.GET.get("last_event_id", "").strip(),
        "The last_event_id parameter",
        "a notification id",
    )


def parse_user(request: HttpRequest) -> int | None:
    """Return the `user` parameter: the id of the user the client expects to be signed in.

    Raise ValueError with a message for the client when it is not a user id.
    """
    return _parse_id(request.GET.get("user", "").strip(), "The user parameter", "a user id")


def _parse_id(value: str, source: str, what: str) -> int | None:
    if not value:
        return None
    if not _ID.fullmatch(value) or int(value) > _MAX_ID:
        shown = value if len(value) <= 40 else value[:40] + "..."
        raise ValueError(f"{source} must be {what} (a whole number of 0 or more), not {shown!r}.")
    return int(value)


@require_safe
async def stream(request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
    # Not @login_required: a stream must answer 403, not redirect (EventSource would follow
    # the redirect to a 200 HTML page and give up), and `request.auser()` would open a
    # database connection in this request's thread and hold it for the stream's whole life.
    hub = get_hub()
    session_key = request.COOKIES.get(settings.SESSION_COOKIE_NAME, "")
    try:
        user_id = await hub.authenticate(session_key) if session_key else None
    except (DatabaseError, TimeoutError):
        logger.warning("Stream refused: the database did not answer", exc_info=True)
        unavailable = HttpResponse(
            "The database is not answering; try again shortly.\n",
            status=503,
            content_type=TEXT_PLAIN,
        )
        unavailable["Retry-After"] = "5"
        return unavailable
    if user_id is None:
        return HttpResponseForbidden(
            "Not signed in: log in, then open the stream again.\n", content_type=TEXT_PLAIN
        )
    try:
        last_event_id = parse_last_event_id(request)
        expected_user = parse_user(request)
    except ValueError as exc:
        return HttpResponseBadRequest(f"{exc}\n", content_type=TEXT_PLAIN)
    if expected_user is not None and expected_user != user_id:
        return HttpResponseForbidden(
            "Signed in as another user: reload the page.\n", content_type=TEXT_PLAIN
        )
    response: HttpResponse | StreamingHttpResponse
    try:
        if request.method == "HEAD":
            # What a page asks once its EventSource has given up: would a new one be let in?
            hub.check_admission(user_id)
            response = HttpResponse(content_type=EVENT_STREAM)
        else:
            subscription = hub.admit(user_id, session_key, after=last_event_id)
            response = StreamingHttpResponse(
                NotificationStream(hub, subscription),
                content_type=EVENT_STREAM,
            )
    except StreamRefused as exc:
        logger.warning("Stream refused for user %s: %s", user_id, exc)
        refused = HttpResponse(f"{exc}\n", status=429, content_type=TEXT_PLAIN)
        refused["Retry-After"] = str(exc.retry_after)
        return refused
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response
