from __future__ import annotations

from django.apps import AppConfig
from django.db.models.signals import post_save


class NotificationsConfig(AppConfig):
    name = "notifications"
    verbose_name = "Notifications"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks  # noqa: F401 (registers the system checks)
        from .models import Notification
        from .signals import notification_saved

        post_save.connect(
            notification_saved, sender=Notification, dispatch_uid="notifications.wake"
        )
