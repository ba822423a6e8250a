from __future__ import annotations

from django.urls import path

from . import views

app_name = "notifications"

urlpatterns = [
    path("", views.page, name="page"),
    path("notifications/stream/", views.stream, name="stream"),
]
