"""On PostgreSQL, NOTIFY the daphne processes when notifications are inserted from anywhere.

Each process LISTENs on one connection and polls at once on a NOTIFY (see notifications.hub),
so a row inserted by another process, a script or plain SQL arrives without waiting for the
poll interval. One NOTIFY per INSERT statement, however many rows it writes. Other databases
get nothing here: SQLite's processes notice commits through PRAGMA data_version.
"""

from __future__ import annotations

from typing import Any

from django.db import migrations

CHANNEL = "notifications_created"
FUNCTION = "notifications_notification_created"


def create_trigger(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    table = schema_editor.quote_name(apps.get_model("notifications", "Notification")._meta.db_table)
    schema_editor.execute(
        f"CREATE OR REPLACE FUNCTION {FUNCTION}() RETURNS trigger AS $$ "
        f"BEGIN PERFORM pg_notify('{CHANNEL}', ''); RETURN NULL; END; "
        "$$ LANGUAGE plpgsql"
    )
    schema_editor.execute(
        f"CREATE TRIGGER {FUNCTION} AFTER INSERT ON {table} "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {FUNCTION}()"
    )


def drop_trigger(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    table = schema_editor.quote_name(apps.get_model("notifications", "Notification")._meta.db_table)
    schema_editor.execute(f"DROP TRIGGER IF EXISTS {FUNCTION} ON {table}")
    schema_editor.execute(f"DROP FUNCTION IF EXISTS {FUNCTION}()")


class Migration(migrations.Migration):
    dependencies = [("notifications", "0002_text_validator")]

    operations = [migrations.RunPython(create_trigger, drop_trigger, elidable=False)]
