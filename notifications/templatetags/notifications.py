"""Template tags of the app: `{% load notifications %}`.

`notification_href` turns a notification's URL into a link target only when it is an http(s)
URL or a path on this site (the model refuses anything else; this holds for rows written
around it too).
"""

from __future__ import annotations

import re

from django import template

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
