from __future__ import annotations

from django.contrib import admin

from .models import Notification


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["id", "user", "__str__", "created", "dispatched", "dispatched_at"]
    list_display_links = ["id", "__str__"]
    list_filter = ["dispatched", "created"]
    list_select_related = ["user"]
    search_fields = ["text", "user__username", "user__email"]
    date_hierarchy = "created"
    ordering = ["-id"]
    # A search box, not a dropdown of every user on the site.
    autocomplete_fields = ["user"]
    fields = ["user", "text", "dispatched", "created", "dispatched_at"]
    readonly_fields = ["created", "dispatched_at"]
