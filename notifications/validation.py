"""The one rule for a notification's text, shared by the model, the forms, the API and commands."""

from __future__ import annotations

from django.core.exceptions import ValidationError

from . import conf


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
