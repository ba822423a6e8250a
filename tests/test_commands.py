from __future__ import annotations

import os
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command


@pytest.mark.django_db
def test_ensure_admin_creates_a_superuser_with_a_printed_random_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("ADMIN_PASSWORD", raising=False)
    out = StringIO()
    call_command("ensure_admin", stdout=out)

    password = out.getvalue().split("password: ")[1].split()[0]
    user = get_user_model().objects.get(username="admin")
    assert user.is_superuser and user.is_staff
    assert len(password) >= 16
    assert user.check_password(password)


@pytest.mark.django_db
def test_ensure_admin_prints_the_random_password_when_admin_password_is_empty(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ADMIN_PASSWORD", "")
    out = StringIO()
    call_command("ensure_admin", stdout=out)

    assert "from ADMIN_PASSWORD" not in out.getvalue()
    password = out.getvalue().split("password: ")[1].split()[0]
    assert get_user_model().objects.get(username="admin").check_password(password)


@pytest.mark.django_db
def test_ensure_admin_takes_the_password_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ADMIN_PASSWORD", "from the environment 42")
    out = StringIO()
    call_command("ensure_admin", stdout=out)

    assert "from the environment 42" not in out.getvalue()
    assert get_user_model().objects.get(username="admin").check_password("from the environment 42")


@pytest.mark.django_db
def test_ensure_admin_leaves_an_existing_superuser_alone() -> None:
    get_user_model().objects.create_superuser("boss", "", "secret secret")
    out = StringIO()
    call_command("ensure_admin", stdout=out)

    assert "as 'boss'" in out.getvalue()
    assert get_user_model().objects.filter(is_superuser=True).count() == 1


def _start_django(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=Path(__file__).resolve().parent.parent,
        env={k: v for k, v in env.items() if k != "SECRET_KEY"}
        | {"DJANGO_SETTINGS_MODULE": "site_config.settings", "ENV_FILE": os.devnull},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.django_db(False)
def test_production_start_up_without_a_secret_key_says_what_to_set(tmp_path: Path) -> None:
    result = _start_django({**os.environ, "DEBUG": "false"})
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr


@pytest.mark.django_db(False)
def test_development_start_up_needs_no_secret_key() -> None:
    result = _start_django({**os.environ, "DEBUG": "true"})
    assert result.returncode == 0, result.stderr
