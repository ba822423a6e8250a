from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django.utils import timezone

from notifications.models import Notification

_AGE = re.compile(r"([0-9]+)([dhm])")
_UNITS = {"d": "days", "h": "hours", "m": "minutes"}


def parse_age(value: str) -> timedelta:
    """Parse `30d`, `12h` or `90m` into a timedelta; raise ValueError otherwise."""
    match = _AGE.fullmatch(value.strip())
    if not match or int(match.group(1)) == 0:
        raise ValueError(
            f"--older-than takes a number and a unit, d, h or m (30d, 12h, 90m), not {value!r}."
        )
    try:
        age = timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
        timezone.now() - age  # noqa: B018 (an age beyond year 1 is refused here, not later)
    except OverflowError as exc:
        raise ValueError(f"--older-than {value} reaches back before the year 1.") from exc
    return age


class Command(BaseCommand):
    help = (
        "Delete notifications older than an age: dispatched ones only, unless "
        "--include-undispatched. Deletes in batches of short transactions, so it is safe to run "
        "from cron while the service is up; running it again deletes nothing more."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--older-than", required=True, metavar="AGE", help="30d, 12h or 90m.")
        parser.add_argument(
            "--include-undispatched",
            action="store_true",
            help="Delete undispatched notifications too (never delivered, never shown).",
        )
        parser.add_argument("--batch-size", type=int, default=2000, metavar="N")
        parser.add_argument(
            "--dry-run", action="store_true", help="Count what would go; delete nothing."
        )

    def handle(
        self,
        *args: Any,
        older_than: str,
        include_undispatched: bool,
        batch_size: int,
        dry_run: bool,
        **options: Any,
    ) -> None:
        try:
            age = parse_age(older_than)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        if batch_size < 1:
            raise CommandError("--batch-size must be 1 or more.")
        cutoff = timezone.now() - age
        old = Notification.objects.filter(created__lt=cutoff)
        if not include_undispatched:
            old = old.filter(dispatched=True)
        which = "" if include_undispatched else "dispatched "
        when = f"created before {cutoff.isoformat(timespec='seconds')}"

        if dry_run:
            self.stdout.write(f"Would delete {old.count():,} {which}notifications {when}.")
            return

        deleted = batches = 0
        after = 0
        while True:
            ids = list(
                old.filter(pk__gt=after).order_by("pk").values_list("pk", flat=True)[:batch_size]
            )
            if not ids:
                break
            # An id range, with the conditions again: a row that changed since it was read
            # (undispatched again after a release) stays. One short transaction per batch,
            # so streams and writers wait for at most one batch.
            with transaction.atomic():
                count, _ = old.filter(pk__gte=ids[0], pk__lte=ids[-1]).delete()
            deleted += count
            batches += 1
            after = ids[-1]
        plural = "batch" if batches == 1 else "batches"
        self.stdout.write(f"Deleted {deleted:,} {which}notifications {when} ({batches} {plural}).")
