from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

pytestmark = pytest.mark.django_db


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


def test_ensure_admin_takes_the_password_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ADMIN_PASSWORD", "from the environment 42")
    out = StringIO()
    call_command("ensure_admin", stdout=out)

    assert "from the environment 42" not in out.getvalue()
    assert get_user_model().objects.get(username="admin").check_password("from the environment 42")


def test_ensure_admin_leaves_an_existing_superuser_alone() -> None:
    get_user_model().objects.create_superuser("boss", "", "secret secret")
    out = StringIO()
    call_command("ensure_admin", stdout=out)

    assert "as 'boss'" in out.getvalue()
    assert get_user_model().objects.filter(is_superuser=True).count() == 1
