"""The admin's sending forms. The rules themselves are in validation.py, used everywhere."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db.models import QuerySet

from . import recipients
from .models import Notification
from .validation import (
    DEFAULT_LEVEL,
    LEVELS,
    URL_MAX_LENGTH,
    validate_level,
    validate_text,
    validate_url,
)


class TextField(forms.CharField):
    """A notification's text: kept as typed (no stripping), checked by validate_text."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("widget", forms.Textarea(attrs={"rows": 5, "cols": 80}))
        kwargs.setdefault("error_messages", {"required": "The text is empty: write something."})
        super().__init__(strip=False, validators=[validate_text], **kwargs)


class LinkField(forms.CharField):
    """A notification's optional link, checked by validate_url ("" for none)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("required", False)
        kwargs.setdefault("max_length", URL_MAX_LENGTH)
        kwargs.setdefault("label", "Link")
        kwargs.setdefault(
            "help_text", "Optional: an http(s) URL, or a path on this site starting with /."
        )
        kwargs.setdefault("widget", forms.TextInput(attrs={"size": 80}))
        super().__init__(validators=[validate_url], **kwargs)


class LevelField(forms.ChoiceField):
    """A notification's level, checked by validate_level; left out, the default level."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("initial", DEFAULT_LEVEL)
        kwargs.setdefault("required", False)
        super().__init__(
            choices=[(level, level.capitalize()) for level in LEVELS],
            validators=[validate_level],
            **kwargs,
        )

    def clean(self, value: Any) -> str:
        return str(super().clean(value) or DEFAULT_LEVEL)


class _SendingForm(forms.Form):
    text = TextField()
    url = LinkField()
    level = LevelField()

    def fields_to_send(self) -> dict[str, Any]:
        """Return the cleaned form as keyword arguments of services.send_bulk."""
        data = self.cleaned_data
        return {"text": data["text"], "url": data["url"] or None, "level": data["level"]}


class SendNotificationForm(_SendingForm):
    """The text, link and level to send to the users selected on the admin's user list."""


class BroadcastForm(_SendingForm):
    """A text for every active user, or for the active members of one group."""

    group = forms.ModelChoiceField(
        queryset=Group.objects.order_by("name"),
        required=False,
        empty_label="All active users",
        label="To",
        help_text="Only active accounts receive a broadcast.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not recipients.has_groups():
            del self.fields["group"]

    def recipients(self) -> QuerySet[Any]:
        """Return the active users the cleaned form sends to."""
        users = get_user_model()._default_manager.filter(recipients.active())
        group = self.cleaned_data.get("group")
        if group is not None:
            users = users.filter(groups=group)
        return users

    def audience(self) -> str:
        """Describe the recipients for messages: 'all active users' or 'group "staff"'."""
        group = self.cleaned_data.get("group")
        return "all active users" if group is None else f'the active members of "{group.name}"'


class NotificationForm(forms.ModelForm):  # type: ignore[type-arg]
    """The admin's add and change form: the link and the level are optional, as in the API."""

    url = LinkField()
    level = LevelField()

    class Meta:
        model = Notification
        fields = ["user", "text", "url", "level", "dispatched"]
