"""The JSON API: a user's notifications page by page, and marking them read.

Thin views: authenticate (the session), parse and check the input, call notifications.inbox,
answer JSON. Every answer is JSON, errors included (`{"error": "..."}` with a 4xx status, or
503 when the database does not answer): a script or the page's fetch() never has to parse an
HTML error page, and an anonymous caller gets 403, not a redirect to the login page.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from django.core.exceptions import RequestDataTooBig
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt

from . import inbox, payload

logger = logging.getLogger(__name__)

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
# Most ids one request may mark read: a page of the API is at most 100, the page shows 50.
MAX_IDS = 1000
# Bytes of request body read at most: 1000 ids of 19 digits fit in about 21,000.
MAX_BODY = 65_536
_MAX_ID = 2**63 - 1

View = Callable[[HttpRequest], HttpResponse]


def error(message: str, status: int) -> JsonResponse:
    """Return `{"error": message}` with this status."""
    return JsonResponse({"error": message}, status=status)


class _CsrfCheck(CsrfViewMiddleware):
    """Django's CSRF check, answering the reason instead of its HTML 403 page."""

    def _reject(self, request: HttpRequest, reason: str) -> Any:
        return reason


def _csrf_failure(request: HttpRequest) -> str | None:
    check = _CsrfCheck(lambda request: HttpResponse())
    check.process_request(request)
    reason: Any = check.process_view(request, lambda request: HttpResponse(), (), {})
    return reason if isinstance(reason, str) else None


def json_view(*methods: str) -> Callable[[View], View]:
    """Make a view answer JSON for every refusal: method, authentication, CSRF, database."""
    allowed = {*methods, "HEAD"} if "GET" in methods else set(methods)

    def decorate(view: View) -> View:
        @functools.wraps(view)
        def wrapper(request: HttpRequest) -> HttpResponse:
            response: HttpResponse
            if request.method not in allowed:
                response = error(
                    f"{request.method} is not allowed here; use {' or '.join(methods)}.", 405
                )
                response["Allow"] = ", ".join(sorted(allowed))
                return response
            try:
                if not request.user.is_authenticated:
                    return error("Not signed in: log in, then try again.", 403)
                # Checked here rather than by the middleware, whose refusal is an HTML page.
                reason = _csrf_failure(request)
                if reason is not None:
                    return error(
                        f"CSRF check failed ({reason}): send the csrftoken cookie's value in "
                        "an X-CSRFToken header.",
                        403,
                    )
                response = view(request)
            except DatabaseError:
                logger.warning("API request failed: the database did not answer", exc_info=True)
                response = error("The database is not answering; try again shortly.", 503)
                response["Retry-After"] = "5"
            response["Cache-Control"] = "no-store"
            return response

        # The CSRF check runs in the wrapper, after authentication, so its refusal is JSON.
        return csrf_exempt(wrapper)

    return decorate


class BadRequest(Exception):
    """Input the client must change; the message says how."""


@json_view("GET")
def notifications(request: HttpRequest) -> HttpResponse:
    """List the user's notifications, newest first, a page at a time."""
    assert request.user.pk is not None
    try:
        before = _positive_id(request.GET.get("before", ""), "before")
        limit = _limit(request.GET.get("limit", ""))
    except BadRequest as exc:
        return error(str(exc), 400)
    found = inbox.page(request.user.pk, before=before, limit=limit)
    next_url = None
    if found.more:
        query = urlencode({"before": found.rows[-1].pk, "limit": limit})
        next_url = f"{reverse('notifications:api-notifications')}?{query}"
    return JsonResponse(
        {
            "notifications": [payload.notification(n) for n in found.rows],
            "unread": inbox.unread_count(request.user.pk),
            "next": next_url,
        }
    )


@json_view("POST")
def read(request: HttpRequest) -> HttpResponse:
    """Mark notifications read: `{"ids": [...]}` or `{"all": true}`; answer the unread count."""
    assert request.user.pk is not None
    try:
        body = _json_body(request)
        ids, newest = _read_request(body)
    except BadRequest as exc:
        return error(str(exc), 400)
    if ids is None:
        unread = inbox.mark_all_read(request.user.pk, newest=newest)
    else:
        unread = inbox.mark_read(request.user.pk, ids)
    return JsonResponse({"unread": unread})


def not_found(request: HttpRequest, path: str = "") -> HttpResponse:
    """Answer an unknown API URL with a JSON 404, not the site's HTML page."""
    return error(f"No API at {request.path}.", 404)


def _positive_id(value: str, name: str) -> int | None:
    value = value.strip()
    if not value:
        return None
    if not (value.isascii() and value.isdigit() and len(value) <= 19 and _is_id(int(value))):
        raise BadRequest(f"{name} must be a notification id (a whole number above 0).")
    return int(value)


def _limit(value: str) -> int:
    value = value.strip()
    if not value:
        return DEFAULT_LIMIT
    if not value.isascii() or not value.isdigit() or not 1 <= int(value) <= MAX_LIMIT:
        raise BadRequest(f"limit must be a whole number from 1 to {MAX_LIMIT}.")
    return int(value)


def _json_body(request: HttpRequest) -> Any:
    content_type = request.content_type or ""
    if content_type != "application/json":
        raise BadRequest(
            f"Send a JSON body with Content-Type: application/json (not {content_type!r})."
        )
    declared = request.META.get("CONTENT_LENGTH") or "0"
    if not declared.isdigit() or int(declared) > MAX_BODY:
        raise BadRequest(f"The body is too large: at most {MAX_BODY:,} bytes.")
    try:
        raw = request.read(MAX_BODY + 1)
    except RequestDataTooBig as exc:
        raise BadRequest(f"The body is too large: at most {MAX_BODY:,} bytes.") from exc
    if len(raw) > MAX_BODY:
        raise BadRequest(f"The body is too large: at most {MAX_BODY:,} bytes.")
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except UnicodeDecodeError as exc:
        raise BadRequest("The body is not UTF-8.") from exc
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"The body is not valid JSON: {exc}") from exc


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _read_request(body: Any) -> tuple[list[int] | None, int | None]:
    """Return (ids, None) for `{"ids": [...]}`, (None, newest) for `{"all": true}`."""
    shape = 'The body must be {"ids": [1, 2, ...]} or {"all": true}'
    if not isinstance(body, dict):
        raise BadRequest(f"{shape}, not a JSON {type(body).__name__}.")
    unknown = sorted(set(body) - {"ids", "all", "newest"})
    if unknown:
        raise BadRequest(f"{shape}; unknown key {unknown[0]!r}.")
    if ("ids" in body) == ("all" in body):
        raise BadRequest(f"{shape}: exactly one of the two.")
    if "all" in body:
        if body["all"] is not True:
            raise BadRequest('"all" must be true.')
        newest = body.get("newest")
        if newest is not None and not _is_id(newest):
            raise BadRequest('"newest" must be a notification id (a whole number above 0).')
        return None, newest
    if "newest" in body:
        raise BadRequest('"newest" goes with {"all": true} only.')
    ids = body["ids"]
    if not isinstance(ids, list):
        raise BadRequest('"ids" must be a list of notification ids.')
    if len(ids) > MAX_IDS:
        raise BadRequest(f'"ids" lists {len(ids):,} ids; at most {MAX_IDS:,} per request.')
    for value in ids:
        if not _is_id(value):
            shown = json.dumps(value)[:40]
            raise BadRequest(
                f'"ids" must hold notification ids (whole numbers above 0), not {shown}.'
            )
    return ids, None


def _is_id(value: Any) -> bool:
    # bool is an int in Python, and true is not an id.
    return type(value) is int and 1 <= value <= _MAX_ID
