"""`manage.py check --deploy` passes with the production values .env.example documents."""

from __future__ import annotations

import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from .support import PROJECT, run_daphne

pytestmark = pytest.mark.django_db(False)


def documented_production_environment() -> dict[str, str]:
    """Return the variables .env.example gives a "Production: <value>" for, with that value."""
    values = {}
    comment = ""
    for line in (PROJECT / ".env.example").read_text().splitlines():
        if line.startswith("#"):
            comment = line
            continue
        name = line.split("=", 1)[0].strip()
        match = re.search(r"Production: (\S+)", comment)
        if name and match:
            values[name] = match.group(1)
        comment = ""
    return values


def check_deploy(extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SECURE_", "SESSION_", "CSRF_")) and k != "SECRET_KEY"
    }
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=PROJECT,
        env={
            **base,
            "ENV_FILE": os.devnull,
            "SECRET_KEY": secrets.token_urlsafe(50),
            "DEBUG": "false",
            "ALLOWED_HOSTS": "notifications.example.com",
            "CSRF_TRUSTED_ORIGINS": "https://notifications.example.com",
            **extra,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_env_example_documents_production_values_for_the_security_settings() -> None:
    assert documented_production_environment() == {
        "SECURE_PROXY_SSL_HEADER": "true",
        "SECURE_SSL_REDIRECT": "true",
        "SECURE_HSTS_SECONDS": "31536000",
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": "true",
        "SECURE_HSTS_PRELOAD": "true",
        "SESSION_COOKIE_SECURE": "true",
        "CSRF_COOKIE_SECURE": "true",
    }


def test_check_deploy_passes_with_the_documented_production_settings() -> None:
    result = check_deploy(documented_production_environment())
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout


def test_check_deploy_fails_with_the_local_defaults() -> None:
    result = check_deploy({})
    assert result.returncode != 0
    for warning in ("W004", "W008", "W012", "W016"):
        assert f"security.{warning}" in result.stderr


@pytest.mark.django_db
def test_healthz_and_metrics_stay_on_plain_http_when_https_is_enforced(settings: Any) -> None:
    settings.SECURE_SSL_REDIRECT = True
    client = Client()

    assert client.get("/accounts/login/").status_code == 301
    assert client.get("/healthz").status_code == 200
    assert client.get("/metrics").status_code == 200


def documented_daphne_command() -> list[str]:
    """Return the systemd unit's daphne command from docs/deployment.md, to run here."""
    line = next(
        line
        for line in (PROJECT / "docs" / "deployment.md").read_text().splitlines()
        if line.startswith("ExecStart=")
    )
    argv = shlex.split(line.removeprefix("ExecStart="))
    assert argv[0].endswith("/daphne"), line
    return [sys.executable, "-m", "daphne", *argv[1:]]


def test_bin_serve_and_the_deployment_run_daphne_with_a_listen_backlog() -> None:
    serve = (PROJECT / "bin" / "serve").read_text()
    assert 'daphne -e "tcp:port=${port}:interface=127.0.0.1:backlog=4096"' in serve
    command = documented_daphne_command()
    assert "-b" not in command and "-p" not in command
    assert "tcp:port=%i:interface=127.0.0.1:backlog=4096" in command


def test_the_documented_daphne_command_listens_with_its_backlog(tmp_path: Path) -> None:
    ss = shutil.which("ss") or shutil.which("ss", path="/usr/sbin:/sbin:/usr/bin:/bin")
    if ss is None:
        pytest.skip("ss (iproute2) is not installed")
    command = [part.replace("port=%i", "port=0") for part in documented_daphne_command()]
    env = {
        **os.environ,
        "ENV_FILE": os.devnull,
        "SECRET_KEY": secrets.token_urlsafe(50),
        "DEBUG": "false",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
    }
    somaxconn = int(Path("/proc/sys/net/core/somaxconn").read_text())

    with run_daphne(command, PROJECT, env, tmp_path / "daphne.log") as server:
        listening = subprocess.run(
            [ss, "-ltnH", f"sport = :{server.port}"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.split()

    # State, Recv-Q, Send-Q (the backlog of a listening socket), local address, peer.
    assert listening[0] == "LISTEN", listening
    assert int(listening[2]) == min(4096, somaxconn), listening
