"""Template tags of the app: `{% load notifications %}`.

`{% notifications_bell %}` renders the bell (a button with the unread count and a menu of
the newest notifications, live) into any template of a host site, with its stylesheet and
script: nothing is needed in the host's <head>. `notifications_unread_count` gives the
signed-in user's unread count; `notification_href` turns a notification's URL into a link
target only when it is an http(s) URL or a path on this site (the model refuses anything
else; this holds for rows written around it too).
"""

from __future__ import annotations

import itertools
import re
from typing import Any
from urllib.parse import urlencode

from django import template
from django.middleware.csrf import get_token
from django.urls import reverse

from .. import inbox

register = template.Library()

# Characters URL parsers drop or reinterpret (`java\tscript:` runs as `javascript:`).
_UNSAFE = re.compile(r"[\s\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\\]")
_ABSOLUTE = re.compile(r"https?://", re.IGNORECASE)

# Notifications in the bell's menu.
BELL_SIZE = 8

# Distinct ids for the elements of each bell rendered by this process (ARIA links them).
_bell_numbers = itertools.count(1)


@register.filter
def notification_href(url: object) -> str:
    """Return `url` if it may be a link's target (http(s), or a path on this site), else ""."""
    if not isinstance(url, str) or not url or _UNSAFE.search(url):
        return ""
    if url.startswith("/"):
        return "" if url.startswith("//") else url
    return url if _ABSOLUTE.match(url) else ""


def _user_id(context: template.Context) -> int | None:
    request = context.get("request")
    user: Any = context.get("user") or getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return None
    user_id: int = user.pk
    return user_id


@register.simple_tag(takes_context=True)
def notifications_unread_count(context: template.Context) -> int | str:
    """Return the signed-in user's unread count ("" for an anonymous user)."""
    user_id = _user_id(context)
    return "" if user_id is None else inbox.unread_count(user_id)


@register.inclusion_tag("notifications/bell.html", takes_context=True)
def notifications_bell(context: template.Context) -> dict[str, Any]:
    """Render the bell for the signed-in user; nothing for an anonymous one."""
    user_id = _user_id(context)
    if user_id is None:
        return {"show": False}
    newest = inbox.page(user_id, before=None, limit=BELL_SIZE).rows
    # The newest id shown is the stream's cursor: what comes after it arrives live.
    query = urlencode({"last_event_id": newest[0].pk if newest else 0, "user": user_id})
    request = context.get("request")
    return {
        "show": True,
        "id": f"notifications-bell-{next(_bell_numbers)}",
        "notifications": newest,
        "size": BELL_SIZE,
        "unread": inbox.unread_count(user_id),
        "user_id": user_id,
        "stream_url": f"{reverse('notifications:stream')}?{query}",
        "api_notifications": reverse("notifications:api-notifications"),
        "api_read": reverse("notifications:api-read"),
        "page_url": reverse("notifications:page"),
        # From the request, not the csrftoken cookie: it works where the site makes the cookie
        # HttpOnly or keeps the token in the session; and it makes sure the cookie is set.
        "csrf_token": get_token(request) if request is not None else context.get("csrf_token", ""),
    }
