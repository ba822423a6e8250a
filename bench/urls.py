from __future__ import annotations

from django.urls import include, path

from . import floor, naive, views

urlpatterns = [
    path("bench/stats", views.stats),
    path("bench/naive/stream/", naive.stream),
    path(floor.DJANGO_PATH.lstrip("/"), floor.django_stream),
    path("", include("site_config.urls")),
]
