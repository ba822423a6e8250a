from __future__ import annotations

import sys
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import Q

from notifications import services
from notifications.recipients import active, has_groups
from notifications.validation import DEFAULT_LEVEL, LEVELS


class Command(BaseCommand):
    help = (
        "Send a notification to users, the active members of groups, and/or all active users. "
        "TEXT '-' reads the text from standard input. Everything is checked before anything is "
        "written, and all rows are written in one transaction."
    )
    # call_command(..., stdin=...) in tests; the command line reads sys.stdin.
    stealth_options = ("stdin",)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("text", metavar="TEXT", help="The text, or - to read it from stdin.")
        parser.add_argument(
            "--user",
            action="append",
            default=[],
            metavar="NAME",
            help="A recipient by the user model's USERNAME_FIELD (the username, or the e-mail "
            "address of a model that logs in by e-mail), active or not (repeatable).",
        )
        parser.add_argument(
            "--group",
            action="append",
            default=[],
            metavar="NAME",
            help="The active members of this group (repeatable).",
        )
        parser.add_argument("--all-active", action="store_true", help="Every active user.")
        parser.add_argument(
            "--url",
            default=None,
            metavar="URL",
            help="A link: an http(s) URL, or a path on this site starting with / (/orders/42).",
        )
        parser.add_argument(
            "--level",
            default=DEFAULT_LEVEL,
            metavar="LEVEL",
            help=f"One of {', '.join(LEVELS)} (default: {DEFAULT_LEVEL}).",
        )

    def handle(
        self,
        *args: Any,
        text: str,
        user: list[str],
        group: list[str],
        all_active: bool,
        url: str | None,
        level: str,
        **options: Any,
    ) -> None:
        if text == "-":
            stdin = options.get("stdin") or sys.stdin
            # The newline that ends `echo` or a heredoc is not part of the text.
            try:
                text = stdin.read().rstrip("\r\n")
            except UnicodeDecodeError as exc:
                raise CommandError(f"The text on stdin is not valid UTF-8: {exc}") from exc
        for check, value, option in (
            (services.validate_text, text, "TEXT"),
            (services.validate_url, url or "", "--url"),
            (services.validate_level, level, "--level"),
        ):
            try:
                check(value)
            except ValidationError as exc:
                raise CommandError(f"{option}: {' '.join(exc.messages)}") from exc
        if not (user or group or all_active):
            raise CommandError("Say who to send to: --user, --group and/or --all-active.")

        model = get_user_model()
        users = model._default_manager
        by_name = {
            u.get_username(): u.pk for u in users.filter(**{f"{model.USERNAME_FIELD}__in": user})
        }
        unknown = [name for name in user if name not in by_name]
        if unknown:
            raise CommandError(f"No such user: {', '.join(unknown)}.")
        if group and not has_groups():
            raise CommandError("This site's user model has no groups: --group cannot be used.")
        groups = list(Group.objects.filter(name__in=group))
        unknown = sorted(set(group) - {g.name for g in groups})
        if unknown:
            raise CommandError(f"No such group: {', '.join(unknown)}.")

        # One query for all recipients (no list of ids: SQLite caps a query's parameters).
        wanted = Q(pk__in=list(by_name.values()))
        if all_active:
            wanted |= active()
        elif groups:
            wanted |= active() & Q(groups__in=groups)
        recipients = users.filter(wanted)
        if not recipients.exists():
            why = "no user is active" if all_active else "those groups have no active member"
            raise CommandError(f"Nobody to send to: {why}.")
        created = services.send_bulk(recipients, text, url=url, level=level)
        to = [f"user {name}" for name in user] + [f"group {g.name}" for g in groups]
        if all_active:
            to.append("all active users")
        self.stdout.write(
            f"Sent {len(created):,} notification{_s(len(created))} ({', '.join(to)})."
        )


def _s(count: int) -> str:
    return "" if count == 1 else "s"
