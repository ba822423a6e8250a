from __future__ import annotations

from django.urls import include, path

from . import naive, views

urlpatterns = [
    path("bench/stats", views.stats),
    path("bench/naive/stream/", naive.stream),
    path("", include("site_config.urls")),
]
