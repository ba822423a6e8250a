from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils.text import Truncator

from .validation import validate_text


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
        ]

    def __str__(self) -> str:
        return Truncator(self.text).chars(60)
