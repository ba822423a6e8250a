from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from notifications import views

urlpatterns = [
    # This site's home is the notifications page; the app's own URLs are under notifications/.
    path("", views.page, name="home"),
    path("notifications/", include("notifications.urls")),
    path("", include("notifications.monitoring_urls")),
    path("accounts/", include("django.contrib.auth.urls")),
    path("admin/", admin.site.urls),
]
