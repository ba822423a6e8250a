"""The app's URLs; a site mounts them with path("notifications/", include("notifications.urls"))."""

from __future__ import annotations

from django.urls import path, re_path

from . import api, views

app_name = "notifications"

urlpatterns = [
    path("", views.page, name="page"),
    path("stream/", views.stream, name="stream"),
    path("api/notifications/", api.notifications, name="api-notifications"),
    path("api/read/", api.read, name="api-read"),
    # Anything else under api/ answers JSON too.
    re_path(r"^api/(?P<path>.*)$", api.not_found),
]
