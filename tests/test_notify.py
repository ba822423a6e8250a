"""manage.py notify: exit status, one-line output, nothing written on error."""

from __future__ import annotations

import os
import subprocess
import sys
from io import StringIO
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.core.management import CommandError, call_command

from notifications.models import Notification

from .support import PROJECT, database_url, make_user


def notify(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run manage.py notify as an operator would, on the test database."""
    return subprocess.run(
        [sys.executable, "manage.py", "notify", *args],
        cwd=PROJECT,
        env={**os.environ, "DATABASE_URL": database_url(), "ENV_FILE": os.devnull},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def texts() -> list[tuple[str, str]]:
    return sorted(Notification.objects.values_list("user__username", "text"))


@pytest.mark.django_db(transaction=True)
def test_notify_sends_and_prints_one_line_with_status_0() -> None:
    make_user("alice")
    staff = Group.objects.create(name="staff")
    make_user("sam").groups.add(staff)
    make_user("idle", is_active=False).groups.add(staff)

    result = notify("--user", "alice", "--group", "staff", "Coffee machine fixed")

    assert result.returncode == 0, result.stderr
    assert result.stdout == "Sent 2 notifications (user alice, group staff).\n"
    assert texts() == [("alice", "Coffee machine fixed"), ("sam", "Coffee machine fixed")]


@pytest.mark.django_db(transaction=True)
def test_notify_reads_the_text_from_stdin() -> None:
    make_user("alice")

    result = notify("--user", "alice", "-", stdin="Line one\nline two\n")

    assert result.returncode == 0, result.stderr
    assert texts() == [("alice", "Line one\nline two")]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("args", "stdin", "error"),
    [
        (["--user", "alice", "--user", "nobody", "hi"], None, "No such user: nobody."),
        (["--user", "alice", "--group", "ghosts", "hi"], None, "No such group: ghosts."),
        (["--user", "alice", "   "], None, "The text is empty"),
        (["--user", "alice", "-"], "\n", "The text is empty"),
        (["hi"], None, "Say who to send to"),
    ],
)
def test_notify_fails_with_status_1_and_writes_nothing(
    args: list[str], stdin: str | None, error: str
) -> None:
    make_user("alice")

    result = notify(*args, stdin=stdin)

    assert result.returncode == 1
    assert error in result.stderr
    assert result.stdout == ""
    assert not Notification.objects.exists()


@pytest.mark.django_db
def test_notify_refuses_a_group_without_active_members() -> None:
    quiet = Group.objects.create(name="quiet")
    make_user("gone", is_active=False).groups.add(quiet)
    with pytest.raises(CommandError, match="Nobody to send to: those groups have no active"):
        call_command("notify", "--group", "quiet", "hello")
    assert not Notification.objects.exists()


@pytest.mark.django_db
def test_notify_refuses_text_over_the_maximum(settings: Any) -> None:
    settings.NOTIFICATIONS_MAX_LENGTH = 10
    make_user("alice")
    with pytest.raises(CommandError, match="11 characters; at most 10"):
        call_command("notify", "--user", "alice", "x" * 11)
    assert not Notification.objects.exists()


@pytest.mark.django_db
def test_notify_all_active_skips_inactive_users_and_dedupes() -> None:
    make_user("alice")
    make_user("bob")
    make_user("gone", is_active=False)
    out = StringIO()

    call_command(
        "notify", "--all-active", "--user", "alice", "--user", "gone", "Hi all", stdout=out
    )

    # gone was named explicitly: an explicit choice is sent to, active or not.
    assert out.getvalue() == "Sent 3 notifications (user alice, user gone, all active users).\n"
    assert texts() == [("alice", "Hi all"), ("bob", "Hi all"), ("gone", "Hi all")]


@pytest.mark.django_db
def test_notify_stdin_option_for_call_command() -> None:
    make_user("alice")
    call_command(
        "notify", "--user", "alice", "-", stdin=StringIO("from a pipe\r\n"), stdout=StringIO()
    )
    assert texts() == [("alice", "from a pipe")]


@pytest.mark.django_db
def test_notify_refuses_a_nul_character_and_stdin_that_is_not_utf8() -> None:
    from io import BytesIO, TextIOWrapper

    make_user("alice")
    with pytest.raises(CommandError, match="NUL"):
        call_command("notify", "--user", "alice", "a\x00b", stdout=StringIO())
    not_utf8 = TextIOWrapper(BytesIO(b"caf\xe9\n"), encoding="utf-8")
    with pytest.raises(CommandError, match="not valid UTF-8"):
        call_command("notify", "--user", "alice", "-", stdin=not_utf8, stdout=StringIO())
    assert texts() == []


@pytest.mark.django_db(transaction=True)
def test_notify_sends_a_link_and_a_level() -> None:
    make_user("alice")
    result = notify("--user", "alice", "--url", "/orders/42", "--level", "warning", "Order late")
    assert result.returncode == 0, result.stderr
    assert list(Notification.objects.values_list("text", "url", "level")) == [
        ("Order late", "/orders/42", "warning")
    ]


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (
            ["--url", "javascript:alert(1)"],
            "--url: Links with the scheme javascript: are not allowed",
        ),
        (["--url", "//evil.example"], "--url: The link starts with //"),
        (["--url", "orders/42"], "--url: The link must be an http:// or https:// URL"),
        (
            ["--level", "critical"],
            "--level: The level must be one of info, success, warning, error",
        ),
    ],
)
@pytest.mark.django_db
def test_notify_refuses_a_bad_link_or_level_and_writes_nothing(args: list[str], error: str) -> None:
    make_user("alice")
    with pytest.raises(CommandError, match=error.replace("(", r"\(")):
        call_command("notify", "--user", "alice", *args, "Hello", stdout=StringIO())
    assert not Notification.objects.exists()
