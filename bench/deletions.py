"""What recording deletions costs: the purge with and without the deletion trigger.

    bin/bench deletions --rows 100000 --users 10000 --rounds 4

On the benchmark's fresh database: --users users are bulk-created, then --rounds times, each
round with the trigger of migration 0005 and without it (in alternating order, so a trend in
the machine's load falls on both alike):
  - --rows dispatched notifications are bulk-inserted over those users (one transaction, the
    insert timed too: the index on unread rows of migration 0004 is there both times);
  - back-dated, then `manage.py purge_notifications --older-than 1d` is run in this process
    (call_command: no start-up time), in its default batches of 2,000, and timed;
  - the change rows it wrote are counted and deleted.
The trigger is put back whatever happens.
"""

from __future__ import annotations

import importlib
import io
import statistics
import time
from datetime import timedelta
from typing import Any

from .database import Database


def deletions(database: Database, rows: int, users: int, rounds: int) -> dict[str, Any]:
    from django.apps import apps
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection, transaction
    from django.db.models import F

    from notifications.models import Change, Notification

    triggers = importlib.import_module("notifications.migrations.0005_change_triggers")
    user_model = get_user_model()
    user_model.objects.bulk_create(
        [user_model(username=f"reader{i}", password="!") for i in range(users)], batch_size=5000
    )
    user_ids = list(user_model.objects.values_list("pk", flat=True))

    def set_trigger(on: bool) -> None:
        with connection.schema_editor() as editor:
            triggers.drop_triggers(apps, editor)
            if on:
                triggers.create_triggers(apps, editor)

    def insert() -> float:
        batch = [
            Notification(user_id=user_ids[i % len(user_ids)], text=f"row {i}", dispatched=True)
            for i in range(rows)
        ]
        started = time.perf_counter()
        with transaction.atomic():
            Notification.objects.bulk_create(batch, batch_size=2000)
        return time.perf_counter() - started

    def purge() -> float:
        Notification.objects.update(created=F("created") - timedelta(days=2))
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(f"VACUUM ANALYZE {Notification._meta.db_table}")
        started = time.perf_counter()
        call_command("purge_notifications", "--older-than", "1d", stdout=io.StringIO())
        seconds = time.perf_counter() - started
        assert not Notification.objects.exists(), "purge left rows behind"
        return seconds

    seconds: dict[str, list[float]] = {
        "insert, trigger": [],
        "insert, no trigger": [],
        "purge, trigger": [],
        "purge, no trigger": [],
    }
    change_rows: list[int] = []
    try:
        for round_ in range(rounds):
            for on in (True, False) if round_ % 2 == 0 else (False, True):
                label = "trigger" if on else "no trigger"
                set_trigger(on)
                seconds[f"insert, {label}"].append(insert())
                seconds[f"purge, {label}"].append(purge())
                if on:
                    change_rows.append(Change.objects.count())
                Change.objects.all().delete()
                print(
                    f"round {round_ + 1}/{rounds}, {label}: "
                    f"insert {seconds[f'insert, {label}'][-1]:.2f} s, "
                    f"purge {seconds[f'purge, {label}'][-1]:.2f} s",
                    flush=True,
                )
    finally:
        set_trigger(True)
    return {
        "rows": rows,
        "users": users,
        "rounds": rounds,
        "seconds": seconds,
        "median_seconds": {k: statistics.median(v) for k, v in seconds.items()},
        "change_rows_per_purge": change_rows,
    }
