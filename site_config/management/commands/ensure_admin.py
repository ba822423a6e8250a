from __future__ import annotations

import os
import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser


class Command(BaseCommand):
    help = (
        "Make sure a superuser exists to log in with. A new one gets ADMIN_PASSWORD from the "
        "environment, or a random password printed once."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", default=os.environ.get("ADMIN_USERNAME", "admin"))
        parser.add_argument("--url", default="http://127.0.0.1:8000/")

    def handle(self, *args: Any, username: str, url: str, **options: Any) -> None:
        users = get_user_model()._default_manager
        existing = users.filter(is_superuser=True, is_active=True).order_by("pk").first()
        if existing is not None:
            name = existing.get_username()
            self.stdout.write(
                f"Log in at {url} as {name!r} (forgot the password? "
                f"python manage.py changepassword {name})."
            )
            return
        # An empty ADMIN_PASSWORD is no password: a random one is made and shown.
        chosen = os.environ.get("ADMIN_PASSWORD", "")
        password = chosen or secrets.token_urlsafe(12)
        users.create_superuser(username=username, email="", password=password)
        shown = "from ADMIN_PASSWORD" if chosen else password
        self.stdout.write(
            self.style.SUCCESS(
                f"Created the superuser {username!r}. Log in at {url}\n"
                f"  username: {username}\n  password: {shown}\n"
                "This password is shown only now."
            )
        )
