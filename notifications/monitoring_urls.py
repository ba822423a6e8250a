"""Health check and metrics, a URLconf of their own: a site includes them where it likes.

This project's site mounts them at the root (`/healthz`, `/metrics`).
"""

from __future__ import annotations

from django.urls import path

from . import monitoring

app_name = "notifications_monitoring"

urlpatterns = [
    # No trailing slash: what load balancers and Prometheus are usually pointed at.
    path("healthz", monitoring.healthz, name="healthz"),
    path("metrics", monitoring.metrics, name="metrics"),
]
