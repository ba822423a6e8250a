"""Signal receivers, connected in NotificationsConfig.ready()."""

from __future__ import annotations

from typing import Any

from .hub import notifications_created
from .models import Notification


def notification_saved(
    sender: type[Notification], instance: Notification, created: bool, using: str, **kwargs: Any
) -> None:
    if created:
        notifications_created(using)
