from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import ForeignKey, QuerySet
from django.forms import ModelChoiceField
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse

from . import services
from .forms import BroadcastForm, NotificationForm, SendNotificationForm
from .models import Notification
from .widgets import AutocompleteSelect

User = get_user_model()


def _count(created: list[Notification]) -> str:
    return f"{len(created):,} notification{'' if len(created) == 1 else 's'}"


class UserFilter(admin.SimpleListFilter):
    """Filter by username, typed in: a list of every user would be as long as the user table."""

    title = "user"
    parameter_name = "user"
    template = "admin/notifications/user_filter.html"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        value = self.value()
        return [(value, value)] if value else []

    def has_output(self) -> bool:
        return True

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if not value:
            return queryset
        return queryset.filter(**{f"user__{User.USERNAME_FIELD}": value})

    def choices(self, changelist: Any) -> Any:
        yield {
            "value": self.value() or "",
            "parameter_name": self.parameter_name,
            "all_query_string": changelist.get_query_string(remove=[self.parameter_name]),
            # The other filters and the search stay as they are when a username is typed.
            "hidden": [
                (key, value)
                for key, value in changelist.params.items()
                if key != self.parameter_name
            ],
        }


class ReadFilter(admin.SimpleListFilter):
    title = "read"
    parameter_name = "read"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "Read"), ("no", "Unread")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "yes":
            return queryset.filter(read_at__isnull=False)
        if self.value() == "no":
            return queryset.filter(read_at__isnull=True)
        return queryset


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = [
        "id",
        "user",
        "__str__",
        "level",
        "created",
        "dispatched",
        "dispatched_at",
        "read",
    ]
    list_display_links = ["id", "__str__"]
    list_filter = ["dispatched", ReadFilter, "level", UserFilter, "created"]
    list_select_related = ["user"]
    search_fields = ["text", "user__username", "user__email"]
    date_hierarchy = "created"
    ordering = ["-id"]
    # A search box, not a dropdown of every user on the site.
    autocomplete_fields = ["user"]
    form = NotificationForm
    fields = ["user", "text", "url", "level", "dispatched", "created", "dispatched_at", "read_at"]
    readonly_fields = ["created", "dispatched_at", "read_at"]
    actions = ["send_again"]

    @admin.display(boolean=True, ordering="read_at")
    def read(self, notification: Notification) -> bool:
        return notification.read_at is not None

    def formfield_for_foreignkey(
        self, db_field: ForeignKey[Any, Any], request: HttpRequest, **kwargs: Any
    ) -> ModelChoiceField | None:  # type: ignore[type-arg]
        if db_field.name in self.get_autocomplete_fields(request):
            kwargs.setdefault(
                "widget", AutocompleteSelect(db_field, self.admin_site, using=kwargs.get("using"))
            )
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    @admin.action(
        description="Send again (a new notification with the same text)", permissions=["add"]
    )
    def send_again(self, request: HttpRequest, queryset: QuerySet[Notification]) -> None:
        try:
            created = services.resend(queryset.order_by("pk"))
        except ValidationError as exc:
            self.message_user(request, " ".join(exc.messages), messages.ERROR)
            return
        self.message_user(request, f"Sent {_count(created)} again.", messages.SUCCESS)

    def get_urls(self) -> list[URLPattern]:
        broadcast = path(
            "broadcast/",
            self.admin_site.admin_view(self.broadcast_view),
            name="notifications_notification_broadcast",
        )
        return [broadcast, *super().get_urls()]

    def broadcast_view(self, request: HttpRequest) -> HttpResponse:
        """Send one text to every active user, or to a group's active members, after a confirm."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = BroadcastForm(request.POST if request.method == "POST" else None)
        count = None
        # "Change it" on the confirmation goes back to the form, filled in.
        if form.is_valid() and "edit" not in request.POST:
            recipients = form.recipients()
            count = recipients.count()
            if not count:
                form.add_error("group", f"Nobody to send to: {form.audience()} is nobody.")
                count = None
            elif "confirm" in request.POST:
                created = services.send_bulk(recipients, form.cleaned_data["text"])
                self.message_user(
                    request,
                    f"Sent {_count(created)} to {form.audience()}.",
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(reverse("admin:notifications_notification_changelist"))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Broadcast a notification",
            "form": form,
            "count": count,
            "audience": form.audience() if count else "",
        }
        return TemplateResponse(request, "admin/notifications/broadcast.html", context)


class NotifyingUserAdmin(UserAdmin):  # type: ignore[type-arg]
    """Django's user admin, plus the "Send notification…" action on the user list."""

    actions = ["send_notification"]

    def has_notify_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("notifications.add_notification")

    @admin.action(description="Send notification…", permissions=["notify"])
    def send_notification(
        self, request: HttpRequest, queryset: QuerySet[Any]
    ) -> HttpResponse | None:
        """Ask for the text (an intermediate page), then send it to the selected users."""
        form = SendNotificationForm(request.POST if "apply" in request.POST else None)
        if form.is_valid():
            # Sent to whom was selected, active or not: an explicit choice.
            created = services.send_bulk(queryset, form.cleaned_data["text"])
            self.message_user(
                request,
                f"Sent {_count(created)} to the selected users.",
                messages.SUCCESS,
            )
            return None
        selected = queryset.count()
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Send a notification",
            "form": form,
            "selected": selected,
            "inactive": queryset.filter(is_active=False).count(),
            "preview": list(queryset.order_by("pk")[:10]),
            "selected_ids": request.POST.getlist(ACTION_CHECKBOX_NAME),
            "select_across": request.POST.get("select_across", "0"),
            "action_checkbox_name": ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/notifications/send_notification.html", context)


if admin.site.is_registered(User):
    admin.site.unregister(User)
admin.site.register(User, NotifyingUserAdmin)
