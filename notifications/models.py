from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils.text import Truncator


class Notification(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="notifications",
        # The (user, id) index below serves this foreign key too.
        db_index=False,
    )
    text = models.TextField()
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
