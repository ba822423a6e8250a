"""The rules for a notification's fields, shared by the model, the forms, the API and commands.

Each rule is one function that raises django.core.exceptions.ValidationError with a message
for the person who typed the value: the model's field validators, the admin's forms, the JSON
API, `send_notification`/`send_bulk` and `manage.py notify` all call these, so a value one of
them accepts, every other accepts too.
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError

from . import conf

LEVELS = ("info", "success", "warning", "error")
DEFAULT_LEVEL = "info"

# Longest link accepted: what browsers and proxies handle everywhere, far above real links.
URL_MAX_LENGTH = 2048

# A scheme as RFC 3986 defines it, up to its colon.
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:")
_ALLOWED_SCHEMES = ("http", "https")


def validate_text(text: str) -> None:
    """Refuse text that is empty or only whitespace, has a NUL, or exceeds the maximum length."""
    if not isinstance(text, str) or not text.strip():
        raise ValidationError("The text is empty: write something to send.", code="empty")
    if "\x00" in text:
        # PostgreSQL's text type cannot hold it, and SQLite would: refused on both alike.
        raise ValidationError("The text contains a NUL character (\\x00).", code="null")
    limit = conf.max_length()
    if len(text) > limit:
        raise ValidationError(
            "The text has %(length)s characters; at most %(limit)s are allowed "
            "(NOTIFICATIONS_MAX_LENGTH).",
            code="max_length",
            params={"length": f"{len(text):,}", "limit": f"{limit:,}"},
        )


def validate_url(url: str) -> None:
    """Refuse a link that is not an absolute http(s) URL or a path on this site.

    Accepted: `https://example.com/x`, `http://example.com`, `/orders/42?tab=1#top`.
    Refused: every other scheme (`javascript:`, `data:`, `mailto:`, ...), scheme-relative
    `//host` and `/\\host` (browsers read both as another host), relative paths without a
    leading `/`, user names or passwords in the host part, and any whitespace, control,
    invisible formatting character or backslash anywhere: browsers strip or ignore some of
    these while parsing (`java\\tscript:` runs as `javascript:`), so a link that contains one
    does not mean what it shows. An empty string is no link at all, and is accepted.
    """
    if not isinstance(url, str):
        raise ValidationError("The link must be text.", code="url_type")
    if url == "":
        return
    if len(url) > URL_MAX_LENGTH:
        raise ValidationError(
            "The link has %(length)s characters; at most %(limit)s are allowed.",
            code="url_length",
            params={"length": f"{len(url):,}", "limit": f"{URL_MAX_LENGTH:,}"},
        )
    for position, char in enumerate(url):
        # Categories C* (controls, formatting such as U+200B or U+202E, surrogates, unassigned)
        # and Z* (spaces and separators of every kind).
        if unicodedata.category(char)[0] in "CZ" or char == "\\":
            raise ValidationError(
                "The link contains %(char)s at position %(position)s: spaces, control "
                "characters, invisible characters and backslashes are not allowed in a link "
                "(percent-encode them, e.g. %%20 for a space).",
                code="url_character",
                params={"char": _describe(char), "position": position + 1},
            )
    if url.startswith("/"):
        if url.startswith("//"):
            raise ValidationError(
                "The link starts with // (a link to another host without a scheme): write "
                "https://host/... for another site, or a single / for a path on this site.",
                code="url_scheme_relative",
            )
        return
    scheme = _SCHEME.match(url)
    if scheme is None:
        raise ValidationError(
            "The link must be an http:// or https:// URL, or a path on this site that starts "
            "with / (not %(shown)s).",
            code="url_relative",
            params={"shown": _shown(url)},
        )
    name = scheme.group()[:-1].lower()
    if name not in _ALLOWED_SCHEMES:
        raise ValidationError(
            "Links with the scheme %(scheme)s: are not allowed: only http:// and https:// "
            "URLs, or a path on this site that starts with /.",
            code="url_scheme",
            params={"scheme": name},
        )
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a port that is not a number)
    except ValueError as exc:
        raise ValidationError(
            "The link is not a valid URL (%(reason)s).", code="url_invalid", params={"reason": exc}
        ) from exc
    if not url[scheme.end() :].startswith("//") or not parts.hostname:
        raise ValidationError(
            "The link has no host: write %(scheme)s://host/path.",
            code="url_host",
            params={"scheme": name},
        )
    if "@" in parts.netloc:
        raise ValidationError(
            "The link has a user name or password before its host (user@host), which "
            "disguises where it leads: remove it.",
            code="url_credentials",
        )


def validate_level(level: str) -> None:
    """Refuse a level other than info, success, warning or error."""
    if level not in LEVELS:
        raise ValidationError(
            "The level must be one of %(levels)s, not %(shown)s.",
            code="level",
            params={"levels": ", ".join(LEVELS), "shown": _shown(level)},
        )


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _describe(char: str) -> str:
    name = unicodedata.name(char, "")
    code = f"U+{ord(char):04X}"
    return f"{code} ({name.lower()})" if name else code
