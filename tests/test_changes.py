"""The change log: deletions recorded by the database trigger, reading by id, pruning."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import AbstractUser
from django.db import connection
from django.utils import timezone

from notifications import changes
from notifications.models import Change, Notification

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("empty_change_log")]


def deletions() -> dict[int, list[int]]:
    """Return the deleted ids recorded per user."""
    found: dict[int, list[int]] = {}
    for change in Change.objects.filter(kind="deleted").order_by("pk"):
        for user, ids in change.by_user().items():
            found.setdefault(user, []).extend(ids)
    return {user: sorted(ids) for user, ids in found.items()}


def test_a_queryset_delete_records_the_ids_per_user(alice: AbstractUser, bob: AbstractUser) -> None:
    a = [Notification.objects.create(user=alice, text=str(i)) for i in range(3)]
    b = Notification.objects.create(user=bob, text="b")

    Notification.objects.filter(pk__in=[a[0].pk, a[2].pk, b.pk]).delete()

    assert deletions() == {alice.pk: [a[0].pk, a[2].pk], bob.pk: [b.pk]}
    if connection.vendor == "postgresql":
        # One change per statement.
        assert Change.objects.count() == 1


def test_an_instance_delete_and_raw_sql_are_recorded(alice: AbstractUser) -> None:
    one, two = (Notification.objects.create(user=alice, text=t) for t in ("1", "2"))
    deleted = one.pk
    one.delete()
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {Notification._meta.db_table} WHERE id = %s", [two.pk])
    assert deletions() == {alice.pk: [deleted, two.pk]}


def test_deleting_a_user_records_their_notifications(alice: AbstractUser) -> None:
    row = Notification.objects.create(user=alice, text="x")
    user_id = alice.pk
    alice.delete()
    # No foreign key constraint on the change table: the user's deletion commits.
    assert deletions() == {user_id: [row.pk]}


def test_a_delete_that_matches_nothing_records_nothing(alice: AbstractUser) -> None:
    Notification.objects.filter(pk=-1).delete()
    assert not Change.objects.exists()


def test_after_reads_by_id_and_latest_id_is_where_a_reader_starts(alice: AbstractUser) -> None:
    assert changes.latest_id() == 0
    rows = [Notification.objects.create(user=alice, text=str(i)) for i in range(3)]
    for row in rows:
        row.delete()
    recorded = list(Change.objects.order_by("pk"))

    assert changes.latest_id() == recorded[-1].pk
    assert [c.pk for c in changes.after(recorded[0].pk, 10)] == [c.pk for c in recorded[1:]]
    assert [c.pk for c in changes.after(0, 1)] == [recorded[0].pk]


def test_prune_deletes_changes_older_than_the_retention(alice: AbstractUser, settings: Any) -> None:
    settings.NOTIFICATIONS_CHANGE_RETENTION = 60
    for text in ("old", "new"):
        Notification.objects.create(user=alice, text=text).delete()
    old, new = Change.objects.order_by("pk")
    Change.objects.filter(pk=old.pk).update(created=timezone.now() - timedelta(seconds=61))

    assert changes.prune() == 1
    assert list(Change.objects.values_list("pk", flat=True)) == [new.pk]


def test_unread_counts_per_user_with_zero_for_none(alice: AbstractUser, bob: AbstractUser) -> None:
    rows = [Notification.objects.create(user=alice, text=str(i)) for i in range(3)]
    Notification.objects.filter(pk=rows[0].pk).update(read_at=timezone.now())
    Notification.objects.create(user=bob, text="b", read_at=timezone.now())

    assert changes.unread_counts([alice.pk, bob.pk, 10**9]) == {alice.pk: 2, bob.pk: 0, 10**9: 0}
    assert changes.unread_counts([]) == {}


def test_unread_counts_for_more_users_than_one_query_takes(alice: AbstractUser) -> None:
    Notification.objects.create(user=alice, text="x")
    users = [alice.pk, *range(10**9, 10**9 + changes.USERS_PER_QUERY + 5)]
    counts = changes.unread_counts(users)
    assert len(counts) == len(users)
    assert counts[alice.pk] == 1


def test_unread_counts_up_to_an_id(alice: AbstractUser) -> None:
    rows = [Notification.objects.create(user=alice, text=str(i)) for i in range(3)]
    assert changes.unread_counts([alice.pk], up_to=rows[1].pk) == {alice.pk: 2}
