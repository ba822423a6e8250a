"""The admin's sending forms. The text rule itself is validation.validate_text, used everywhere."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db.models import QuerySet

from . import recipients
from .validation import validate_text


class TextField(forms.CharField):
    """A notification's text: kept as typed (no stripping), checked by validate_text."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("widget", forms.Textarea(attrs={"rows": 5, "cols": 80}))
        kwargs.setdefault("error_messages", {"required": "The text is empty: write something."})
        super().__init__(strip=False, validators=[validate_text], **kwargs)


class SendNotificationForm(forms.Form):
    """The text to send to the users selected on the admin's user list."""

    text = TextField()


class BroadcastForm(forms.Form):
    """A text for every active user, or for the active members of one group."""

    text = TextField()
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
