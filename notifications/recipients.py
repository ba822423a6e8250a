"""Who can be sent to, for any user model: the admin's forms and `manage.py notify` ask here.

Django's default user has `is_active` and `groups`; a custom model may have neither (an
AbstractBaseUser is always active, and groups come with PermissionsMixin).
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db.models import Q


def _field_names() -> set[str]:
    return {f.name for f in get_user_model()._meta.get_fields()}


def active() -> Q:
    """Return the filter for active users: every user where the model has no `is_active`."""
    return Q(is_active=True) if "is_active" in _field_names() else Q()


def has_groups() -> bool:
    """Whether the user model has Django's `groups` (PermissionsMixin)."""
    return "groups" in _field_names()
