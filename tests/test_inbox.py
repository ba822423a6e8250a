"""notifications.inbox: pages of history, unread counts, marking read and its change records."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import AbstractUser
from django.utils import timezone

from notifications import inbox
from notifications.models import Change, Notification

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("empty_change_log")]


def make(user: AbstractUser, count: int) -> list[Notification]:
    return [Notification.objects.create(user=user, text=f"n{i}") for i in range(count)]


def test_page_is_newest_first_and_says_whether_older_ones_remain(
    alice: AbstractUser, bob: AbstractUser
) -> None:
    rows = make(alice, 5)
    make(bob, 2)

    first = inbox.page(alice.pk, before=None, limit=3)
    second = inbox.page(alice.pk, before=first.rows[-1].pk, limit=3)

    assert [n.pk for n in first.rows] == [n.pk for n in reversed(rows[2:])]
    assert first.more
    assert [n.pk for n in second.rows] == [rows[1].pk, rows[0].pk]
    assert not second.more


def test_page_of_exactly_the_remaining_rows_has_no_more(alice: AbstractUser) -> None:
    make(alice, 3)
    assert not inbox.page(alice.pk, before=None, limit=3).more


def test_listing_claims_nothing_and_marks_nothing_read(alice: AbstractUser) -> None:
    make(alice, 3)
    inbox.page(alice.pk, before=None, limit=10)
    assert not Notification.objects.filter(dispatched=True).exists()
    assert not Notification.objects.filter(read_at__isnull=False).exists()


def test_mark_read_changes_only_the_callers_unread_rows_and_records_them(
    alice: AbstractUser, bob: AbstractUser
) -> None:
    mine = make(alice, 4)
    theirs = make(bob, 1)

    unread = inbox.mark_read(alice.pk, [mine[0].pk, mine[2].pk, theirs[0].pk, 10**12])

    assert unread == 2
    assert set(Notification.objects.filter(read_at__isnull=False).values_list("pk", flat=True)) == {
        mine[0].pk,
        mine[2].pk,
    }
    assert inbox.unread_count(bob.pk) == 1
    change = Change.objects.get()
    assert (change.kind, change.by_user(), change.newest) == (
        "read",
        {alice.pk: [mine[0].pk, mine[2].pk]},
        None,
    )


def test_an_id_already_read_keeps_its_first_read_time_and_records_nothing(
    alice: AbstractUser,
) -> None:
    (row,) = make(alice, 1)
    inbox.mark_read(alice.pk, [row.pk])
    first = Notification.objects.get(pk=row.pk).read_at
    assert first is not None

    assert inbox.mark_read(alice.pk, [row.pk, row.pk]) == 0

    assert Notification.objects.get(pk=row.pk).read_at == first
    assert Change.objects.count() == 1


def test_mark_read_of_more_ids_than_one_statement_takes(alice: AbstractUser) -> None:
    rows = Notification.objects.bulk_create(
        [Notification(user=alice, text=str(i)) for i in range(inbox.CHUNK_SIZE * 2 + 3)]
    )
    assert inbox.mark_read(alice.pk, [n.pk for n in rows[1:]]) == 1
    assert len(Change.objects.get().by_user()[alice.pk]) == len(rows) - 1


def test_mark_all_read_covers_up_to_the_newest_unread_and_records_it(
    alice: AbstractUser, bob: AbstractUser
) -> None:
    rows = make(alice, 3)
    make(bob, 1)

    assert inbox.mark_all_read(alice.pk) == 0

    assert inbox.unread_count(bob.pk) == 1
    change = Change.objects.get()
    assert (change.kind, change.by_user(), change.newest) == ("read", {alice.pk: []}, rows[-1].pk)


def test_mark_all_read_up_to_a_given_id_leaves_newer_ones_unread(alice: AbstractUser) -> None:
    rows = make(alice, 3)
    assert inbox.mark_all_read(alice.pk, newest=rows[1].pk) == 1
    assert Notification.objects.get(read_at__isnull=True).pk == rows[2].pk


def test_mark_all_read_with_nothing_unread_records_nothing(alice: AbstractUser) -> None:
    assert inbox.mark_all_read(alice.pk) == 0
    (row,) = make(alice, 1)
    Notification.objects.filter(pk=row.pk).update(read_at=timezone.now())
    assert inbox.mark_all_read(alice.pk) == 0
    assert not Change.objects.exists()
