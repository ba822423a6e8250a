"""Record every deletion of notifications in the change table, and wake the hubs on a change.

A trigger, not Django's delete signals: it covers every way a row goes (the admin, the purge
command, a site's QuerySet.delete(), a user's deletion cascading, raw SQL) and keeps Django's
fast DELETE (a delete signal receiver makes Django load every row before deleting it).

PostgreSQL: one statement-level trigger writes one change row per DELETE statement, whatever
it deleted (its transition table holds the deleted rows; the row maps each user to their ids),
and the change table's insert trigger NOTIFYs the channel the hubs LISTEN on (the function of
migration 0003). SQLite has no statement-level triggers: one change row per deleted
notification; its hubs notice commits by data_version.
"""

from __future__ import annotations

from typing import Any

from django.db import migrations

DELETED = "notifications_notification_deleted"
# Defined by migration 0003: pg_notify('notifications_created', '').
NOTIFY = "notifications_notification_created"
CHANGE_NOTIFY = "notifications_change_recorded"


def _tables(apps: Any, schema_editor: Any) -> tuple[str, str]:
    quote = schema_editor.quote_name
    notification = apps.get_model("notifications", "Notification")._meta.db_table
    change = apps.get_model("notifications", "Change")._meta.db_table
    return quote(notification), quote(change)


def create_triggers(apps: Any, schema_editor: Any) -> None:
    notification, change = _tables(apps, schema_editor)
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(
            f"CREATE OR REPLACE FUNCTION {DELETED}() RETURNS trigger AS $$ "
            "BEGIN "
            # A DELETE that matched nothing writes nothing, and so wakes nobody.
            "IF EXISTS (SELECT FROM gone) THEN "
            f"INSERT INTO {change} (kind, ids) "
            "SELECT 'deleted', jsonb_object_agg(user_id, ids) FROM "
            "(SELECT user_id, jsonb_agg(id ORDER BY id) AS ids FROM gone GROUP BY user_id) AS u; "
            "END IF; "
            "RETURN NULL; "
            "END; $$ LANGUAGE plpgsql"
        )
        schema_editor.execute(
            f"CREATE TRIGGER {DELETED} AFTER DELETE ON {notification} "
            f"REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION {DELETED}()"
        )
        schema_editor.execute(
            f"CREATE TRIGGER {CHANGE_NOTIFY} AFTER INSERT ON {change} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {NOTIFY}()"
        )
    elif vendor == "sqlite":
        schema_editor.execute(
            f"CREATE TRIGGER {DELETED} AFTER DELETE ON {notification} FOR EACH ROW BEGIN "
            f"INSERT INTO {change} (kind, ids) "
            "VALUES ('deleted', json_object(CAST(OLD.user_id AS TEXT), json_array(OLD.id))); "
            "END"
        )


def drop_triggers(apps: Any, schema_editor: Any) -> None:
    notification, change = _tables(apps, schema_editor)
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {CHANGE_NOTIFY} ON {change}")
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {DELETED} ON {notification}")
        schema_editor.execute(f"DROP FUNCTION IF EXISTS {DELETED}()")
    elif vendor == "sqlite":
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {DELETED}")


class Migration(migrations.Migration):
    dependencies = [("notifications", "0004_read_url_level")]

    operations = [migrations.RunPython(create_triggers, drop_triggers, elidable=False)]
