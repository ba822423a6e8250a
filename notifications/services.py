"""The public Python API for sending: the site's own code, the admin and the commands."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction
from django.db.models import QuerySet

from . import queries
from .hub import notifications_created
from .models import Notification

# Re-exported: the public API's rules, for callers that check before sending.
from .validation import DEFAULT_LEVEL
from .validation import validate_level as validate_level
from .validation import validate_text as validate_text
from .validation import validate_url as validate_url

# Rows per INSERT of a bulk send. All batches of a send share one transaction (nothing
# half-written), which must stay well under SQLite's busy timeout (figures in the README).
SEND_BATCH_SIZE = 2000


class _Fields(NamedTuple):
    text: str
    url: str
    level: str


def _checked(text: str, url: str | None, level: str) -> _Fields:
    validate_text(text)
    validate_url("" if url is None else url)
    validate_level(level)
    return _Fields(text, url or "", level)


def send_notification(
    user: AbstractBaseUser, text: str, *, url: str | None = None, level: str = DEFAULT_LEVEL
) -> Notification:
    """Create one notification for `user`; return it.

    `url`: an optional link, an http(s) URL or a path on this site starting with /. `level`:
    info, success, warning or error. Raise django.core.exceptions.ValidationError when the
    text is empty or too long, the link is not allowed (any other scheme, such as javascript:)
    or the level is unknown.
    """
    fields = _checked(text, url, level)
    # save() wakes this process's streams once the row commits (a post_save receiver).
    return Notification.objects.create(user_id=user.pk, **fields._asdict())


def send_bulk(
    users: Iterable[AbstractBaseUser] | QuerySet[AbstractBaseUser],
    text: str,
    *,
    url: str | None = None,
    level: str = DEFAULT_LEVEL,
) -> list[Notification]:
    """Create one notification with `text` for each distinct user; return them, in user order.

    `users` is any iterable of users or a QuerySet of them, sent to as given: inactive users
    included (broadcasts choose active users themselves). `url` and `level` as for
    send_notification. One transaction, inserted in batches of SEND_BATCH_SIZE: all of them are
    created or none. Raise ValidationError as send_notification does; return [] when there is
    nobody to send to.
    """
    fields = _checked(text, url, level)
    return _insert(_user_ids(users), [fields])


def resend(notifications: Iterable[Notification]) -> list[Notification]:
    """Create a new notification with the same user, text, link and level as each of these.

    Return the new ones. The old rows are left as they are. One transaction, like send_bulk.
    """
    pairs = [(n.user_id, _Fields(n.text, n.url, n.level)) for n in notifications]
    for fields in {fields for _, fields in pairs}:
        _checked(*fields)
    return _insert([user_id for user_id, _ in pairs], [fields for _, fields in pairs])


def _user_ids(users: Iterable[AbstractBaseUser] | QuerySet[AbstractBaseUser]) -> list[int]:
    if isinstance(users, QuerySet):
        # Ids only: a broadcast to every user must not load every user.
        ids: Iterable[int] = users.order_by("pk").values_list("pk", flat=True).iterator(5000)
    else:
        ids = (user.pk for user in users)
    return list(dict.fromkeys(ids))


def _insert(user_ids: Sequence[int], fields: Sequence[_Fields]) -> list[Notification]:
    """Insert one row per user id (fields i, or the one set for all); wake the streams."""
    if not user_ids:
        return []
    single = len(fields) == 1
    rows = [
        Notification(user_id=user_id, **(fields[0] if single else fields[i])._asdict())
        for i, user_id in enumerate(user_ids)
    ]
    alias = queries.database_alias()
    with transaction.atomic(using=alias):
        created = Notification.objects.using(alias).bulk_create(rows, batch_size=SEND_BATCH_SIZE)
        # bulk_create sends no post_save: wake the streams once, when the whole send commits.
        notifications_created(using=alias)
    return created
