"""Template tags of the app: `{% load notifications %}`.

`notifications_unread_count` gives the signed-in user's unread count; `notification_href`
turns a notification's URL into a link target only when it is an http(s) URL or a path on
this site (the model refuses anything else; this holds for rows written around it too).
"""

from __future__ import annotations

import re
from typing import Any

from django import template

from .. import inbox

register = template.Library()

# Characters URL parsers drop or reinterpret (`java\tscript:` runs as `javascript:`).
_UNSAFE = re.compile(r"[\s\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\\]")
_ABSOLUTE = re.compile(r"https?://", re.IGNORECASE)


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
