from __future__ import annotations

from django.urls import path

from . import monitoring, views

app_name = "notifications"

urlpatterns = [
    path("", views.page, name="page"),
    path("notifications/stream/", views.stream, name="stream"),
    # No trailing slash: what load balancers and Prometheus are usually pointed at.
    path("healthz", monitoring.healthz, name="healthz"),
    path("metrics", monitoring.metrics, name="metrics"),
]
