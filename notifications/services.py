"""The public Python API for sending: the site's own code, the admin and the commands."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction
from django.db.models import QuerySet

from . import queries
from .hub import notifications_created
from .models import Notification

# Re-exported: the public API's text rule, for callers that check before sending.
from .validation import validate_text as validate_text

# Rows per INSERT of a bulk send. All batches of a send share one transaction (nothing
# half-written), which must stay well under SQLite's busy timeout (figures in the README).
SEND_BATCH_SIZE = 2000


def send_notification(user: AbstractBaseUser, text: str) -> Notification:
    """Create one notification for `user`; return it.

    Raise django.core.exceptions.ValidationError when the text is empty or too long.
    """
    validate_text(text)
    # save() wakes this process's streams once the row commits (a post_save receiver).
    return Notification.objects.create(user_id=user.pk, text=text)


def send_bulk(
    users: Iterable[AbstractBaseUser] | QuerySet[AbstractBaseUser], text: str
) -> list[Notification]:
    """Create one notification with `text` for each distinct user; return them, in user order.

    `users` is any iterable of users or a QuerySet of them, sent to as given: inactive users
    included (broadcasts choose active users themselves). One transaction, inserted in batches
    of SEND_BATCH_SIZE: all of them are created or none. Raise ValidationError when the text is
    empty or too long; return [] when there is nobody to send to.
    """
    validate_text(text)
    return _insert(_user_ids(users), [text])


def resend(notifications: Iterable[Notification]) -> list[Notification]:
    """Create a new notification with the same user and text as each of these; return them.

    The old rows are left as they are. One transaction, like send_bulk.
    """
    pairs = [(n.user_id, n.text) for n in notifications]
    for text in {text for _, text in pairs}:
        validate_text(text)
    return _insert([user_id for user_id, _ in pairs], [text for _, text in pairs])


def _user_ids(users: Iterable[AbstractBaseUser] | QuerySet[AbstractBaseUser]) -> list[int]:
    if isinstance(users, QuerySet):
        # Ids only: a broadcast to every user must not load every user.
        ids: Iterable[int] = users.order_by("pk").values_list("pk", flat=True).iterator(5000)
    else:
        ids = (user.pk for user in users)
    return list(dict.fromkeys(ids))


def _insert(user_ids: Sequence[int], texts: Sequence[str]) -> list[Notification]:
    """Insert one row per user id (text i of texts, or the one text for all); wake the streams."""
    if not user_ids:
        return []
    single = len(texts) == 1
    rows = [
        Notification(user_id=user_id, text=texts[0] if single else texts[i])
        for i, user_id in enumerate(user_ids)
    ]
    alias = queries.database_alias()
    with transaction.atomic(using=alias):
        created = Notification.objects.using(alias).bulk_create(rows, batch_size=SEND_BATCH_SIZE)
        # bulk_create sends no post_save: wake the streams once, when the whole send commits.
        notifications_created(using=alias)
    return created
