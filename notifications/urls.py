"""The app's URLs; a site mounts them with path("notifications/", include("notifications.urls"))."""

from __future__ import annotations

from django.urls import path

from . import views

app_name = "notifications"

urlpatterns = [
    path("", views.page, name="page"),
    path("stream/", views.stream, name="stream"),
]
