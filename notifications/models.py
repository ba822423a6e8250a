from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models.functions import Now
from django.utils.text import Truncator

from .validation import (
    DEFAULT_LEVEL,
    LEVELS,
    URL_MAX_LENGTH,
    validate_level,
    validate_text,
    validate_url,
)


class Notification(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="notifications",
        # The (user, id) index below serves this foreign key too.
        db_index=False,
    )
    # The length limit is a setting, read at validation time: no max_length in the schema.
    text = models.TextField(validators=[validate_text])
    dispatched = models.BooleanField(default=False)
    created = models.DateTimeField(auto_now_add=True)
    dispatched_at = models.DateTimeField(null=True, blank=True, editable=False)
    # Null while unread. Set through the read API (notifications.inbox), which tells the
    # user's open streams; an edit elsewhere would not.
    read_at = models.DateTimeField(null=True, blank=True, editable=False)
    # "" for no link; see validation.validate_url for what a link may be.
    url = models.CharField(
        max_length=URL_MAX_LENGTH,
        blank=True,
        default="",
        # In the schema too: rows inserted by code that predates these columns (a process
        # not yet upgraded, raw SQL) still get a value.
        db_default="",
        validators=[validate_url],
        help_text="Optional: an http(s) URL, or a path on this site starting with /.",
    )
    level = models.CharField(
        max_length=7,
        choices=[(level, level.capitalize()) for level in LEVELS],
        default=DEFAULT_LEVEL,
        db_default=DEFAULT_LEVEL,
        validators=[validate_level],
    )

    class Meta:
        indexes = [
            # The poll: undispatched rows created in the recent window, for any user.
            models.Index(
                fields=["created"],
                condition=models.Q(dispatched=False),
                name="notification_undispatched",
            ),
            # History and replay: one user's rows by id.
            models.Index(fields=["user", "id"], name="notification_user_id"),
            # Unread counts and "mark all read": one user's unread rows only.
            models.Index(
                fields=["user", "id"],
                condition=models.Q(read_at__isnull=True),
                name="notification_unread",
            ),
        ]

    def __str__(self) -> str:
        return Truncator(self.text).chars(60)


class Change(models.Model):
    """A change to notifications that their user's open streams must hear of: read or deleted.

    Append-only: written in the transaction that makes the change (deletions by a database
    trigger, so every way of deleting is covered), read by every process's hub by id, and
    pruned after NOTIFICATIONS_CHANGE_RETENTION seconds.
    """

    READ = "read"
    DELETED = "deleted"

    # No foreign key constraint: a user's deletion deletes their notifications, whose trigger
    # writes changes for that user in the same transaction.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        db_index=False,
        related_name="+",
    )
    kind = models.CharField(max_length=7, choices=[(READ, "read"), (DELETED, "deleted")])
    # The notification ids concerned; empty for "all read".
    ids = models.JSONField(default=list)
    # For "all read": the newest id it covered (every unread row up to it is now read).
    newest = models.BigIntegerField(null=True)
    created = models.DateTimeField(db_default=Now())

    class Meta:
        indexes = [models.Index(fields=["created"], name="change_created")]

    def __str__(self) -> str:
        return f"{self.kind} for user {self.user_id}"
