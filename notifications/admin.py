from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin import widgets
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.options import IS_POPUP_VAR
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse

from . import services
from .forms import BroadcastForm, NotificationForm, SendNotificationForm
from .models import Notification
from .widgets import AutocompleteSelect

_ADD_PERMISSION = f"{Notification._meta.app_label}.add_notification"


def _count(created: list[Notification]) -> str:
    return f"{len(created):,} notification{'' if len(created) == 1 else 's'}"


def _user_search(site: admin.AdminSite) -> bool:
    """Whether the site registers the user model with search_fields (autocomplete needs it)."""
    user_admin = site._registry.get(get_user_model())
    return bool(user_admin is not None and user_admin.search_fields)


class UserFilter(admin.SimpleListFilter):
    """Filter by the user's USERNAME_FIELD, typed in: a list of every user would be too long."""

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
        return queryset.filter(**{f"user__{get_user_model().USERNAME_FIELD}": value})

    def choices(self, changelist: Any) -> Any:
        user_model = get_user_model()
        login_field = user_model._meta.get_field(user_model.USERNAME_FIELD)
        yield {
            "value": self.value() or "",
            "parameter_name": self.parameter_name,
            # What is typed in: the username, or the e-mail address where that is the login.
            "label": getattr(login_field, "verbose_name", user_model.USERNAME_FIELD),
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
    date_hierarchy = "created"
    ordering = ["-id"]
    form = NotificationForm
    fields = ["user", "text", "url", "level", "dispatched", "created", "dispatched_at", "read_at"]
    readonly_fields = ["created", "dispatched_at", "read_at"]
    actions = ["send_again"]

    @admin.display(boolean=True, ordering="read_at")
    def read(self, notification: Notification) -> bool:
        return notification.read_at is not None

    def get_search_fields(self, request: HttpRequest) -> list[str]:
        user_model = get_user_model()
        # The user model's own names for its login and e-mail fields (any custom user model).
        names = dict.fromkeys([user_model.USERNAME_FIELD, user_model.get_email_field_name()])
        fields = {f.name for f in user_model._meta.get_fields()}
        return ["text", *(f"user__{name}" for name in names if name in fields)]

    def get_autocomplete_fields(self, request: HttpRequest) -> list[str]:
        # A search box, not a dropdown of every user on the site; Django's autocomplete needs
        # the host's user admin with search_fields (admin.E039/E040), else an id box instead.
        return ["user"] if _user_search(self.admin_site) else []

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "user" and not _user_search(self.admin_site):
            kwargs.setdefault(
                "widget", widgets.ForeignKeyRawIdWidget(db_field.remote_field, self.admin_site)
            )
        elif db_field.name in self.get_autocomplete_fields(request):
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
                created = services.send_bulk(recipients, **form.fields_to_send())
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


@admin.action(description="Send notification…")
def notify_users(
    modeladmin: admin.ModelAdmin[Any], request: HttpRequest, queryset: QuerySet[Any]
) -> HttpResponse | None:
    """The user list's "Send notification…": ask for the text, then send it to the selection.

    A host offers it on its user admin with NotifyUsersMixin (only to staff who may add
    notifications), or by listing it in the admin's `actions` (everyone who sees the list is
    offered it; those who may not add notifications are refused when they use it).
    """
    if not request.user.has_perm(_ADD_PERMISSION):
        modeladmin.message_user(
            request, "You may not add notifications: nothing was sent.", messages.ERROR
        )
        return None
    form = SendNotificationForm(request.POST if "apply" in request.POST else None)
    if form.is_valid():
        # Sent to whom was selected, active or not: an explicit choice.
        created = services.send_bulk(queryset, **form.fields_to_send())
        modeladmin.message_user(
            request,
            f"Sent {_count(created)} to the selected users.",
            messages.SUCCESS,
        )
        return None
    selected = queryset.count()
    has_is_active = any(f.name == "is_active" for f in queryset.model._meta.get_fields())
    context = {
        **modeladmin.admin_site.each_context(request),
        "opts": modeladmin.opts,
        "title": "Send a notification",
        "form": form,
        "selected": selected,
        "inactive": queryset.filter(is_active=False).count() if has_is_active else 0,
        "preview": list(queryset.order_by("pk")[:10]),
        "selected_ids": request.POST.getlist(ACTION_CHECKBOX_NAME),
        "select_across": request.POST.get("select_across", "0"),
        "action_checkbox_name": ACTION_CHECKBOX_NAME,
        "action_name": "notify_users",
    }
    return TemplateResponse(request, "admin/notifications/send_notification.html", context)


class NotifyUsersMixin:
    """Offer "Send notification…" on a user admin's list, to staff who may add notifications.

    `class UserAdmin(NotifyUsersMixin, django.contrib.auth.admin.UserAdmin): ...`
    """

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions: dict[str, Any] = super().get_actions(request)  # type: ignore[misc]
        if (
            self.actions is not None  # type: ignore[attr-defined]
            and IS_POPUP_VAR not in request.GET
            and request.user.has_perm(_ADD_PERMISSION)
        ):
            actions["notify_users"] = self.get_action(notify_users)  # type: ignore[attr-defined]
        return actions
