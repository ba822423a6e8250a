"""This site's user admin: Django's, with the notifications app's "Send notification…" action."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin

from notifications.admin import NotifyUsersMixin

User = get_user_model()


class SiteUserAdmin(NotifyUsersMixin, UserAdmin):  # type: ignore[type-arg]
    pass


admin.site.unregister(User)
admin.site.register(User, SiteUserAdmin)
