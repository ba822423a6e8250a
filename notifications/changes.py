"""The change log: read and deleted notifications, for every process's open streams to hear of.

A change is written in the transaction that makes it (marking read here, deleting by the
database trigger of migration 0005), so it exists exactly when the change committed. Each
process reads the log by id, like new notifications, and tells its streams; rows are pruned
after NOTIFICATIONS_CHANGE_RETENTION seconds, long after every process has read them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from . import conf
from .models import Change


def record_read(user_id: int, ids: Sequence[int]) -> Change:
    """Record that these notifications of the user were marked read; wake this process's hubs.

    Call inside the transaction that marked them.
    """
    return _record(Change(kind=Change.READ, ids={str(user_id): sorted(ids)}))


def record_all_read(user_id: int, newest: int) -> Change:
    """Record that every notification of the user up to `newest` was marked read."""
    return _record(Change(kind=Change.READ, ids={str(user_id): []}, newest=newest))


def _record(change: Change) -> Change:
    change.save(force_insert=True)
    # The hub imports this module; the wake-up lives there.
    from .hub import wake_local_hubs

    transaction.on_commit(wake_local_hubs, robust=True)
    return change


def latest_id() -> int:
    """Return the id of the newest change, 0 when there is none: where a new reader starts."""
    newest = Change.objects.order_by("-pk").values_list("pk", flat=True).first()
    return newest or 0


def after(cursor: int, limit: int) -> list[Change]:
    """Return the changes with an id above `cursor`, oldest first, at most `limit`."""
    return list(Change.objects.filter(pk__gt=cursor).order_by("pk")[:limit])


def prune() -> int:
    """Delete changes older than the retention; return how many went."""
    cutoff = timezone.now() - timedelta(seconds=conf.change_retention())
    count, _ = Change.objects.filter(created__lt=cutoff).delete()
    return count
