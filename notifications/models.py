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
    """A change to notifications that their users' open streams must hear of: read or deleted.

    Append-only: written in the transaction that makes the change (deletions by a database
    trigger, so every way of deleting is covered), read by every process's hub by id, and
    pruned after NOTIFICATIONS_CHANGE_RETENTION seconds. One row can cover many users (a
    DELETE statement of a purge batch writes one row on PostgreSQL), so no user column: `ids`
    maps each user's id (as a JSON key, a string) to the ids of that user's notifications.
    """

    READ = "read"
    DELETED = "deleted"

    kind = models.CharField(max_length=7, choices=[(READ, "read"), (DELETED, "deleted")])
    # {"<user id>": [notification id, ...]}; for "all read", {"<user id>": []} and `newest`.
    ids = models.JSONField(default=dict)
    # For "all read": the newest id it covered (every unread row up to it is now read).
    newest = models.BigIntegerField(null=True)
    created = models.DateTimeField(db_default=Now())

    class Meta:
        indexes = [models.Index(fields=["created"], name="change_created")]

    def __str__(self) -> str:
        return f"{self.kind}: {self.ids}"

    def by_user(self) -> dict[int, list[int]]:
        """Return the notification ids per user id."""
        return {int(user): ids for user, ids in self.ids.items()}
