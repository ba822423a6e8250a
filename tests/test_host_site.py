"""The app added to a site nobody here wrote, as the README says, and used in Chromium.

What a host does, in a temporary directory: a wheel of this repository, a fresh virtualenv
with Django in it, `django-admin startproject mysite`, the host's own pieces (an `accounts` app
whose user logs in by e-mail and has no username, not registered in the admin; Django's login
views under `accounts/` with a template of the host's), then the README's "Add it to your
Django site" steps, read from the README (`<!-- host-site: ... -->` markers) and applied as
written: its shell blocks run in the site's folder with the site's virtualenv first on PATH,
its python blocks appended to the files they name. The test changes three things only: the
install command's `path/to/django-live-notifications` becomes the wheel's path, pip installs
take `-c constraints.txt` (the versions the rest of the suite runs), and the serve command's
`-p 8000` becomes `-p 0` (a free port, read from daphne's log).

The site, built once for the module, uses its own SQLite database, so the module runs in the
SQLite pass of bin/test only.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from .support import PROJECT, DaphneServer, StreamReader, run_daphne

pytestmark = [
    pytest.mark.sqlite,
    # The first test also builds the site: a wheel, a virtualenv, pip installs.
    pytest.mark.timeout(600),
]

# The browser fixture's loop: one Chromium for the module.
MODULE_LOOP = pytest.mark.asyncio(loop_scope="module")
MS = 1000
EMAIL = "ada@example.com"
PASSWORD = "correct horse battery staple"
PLACEHOLDER = "path/to/django-live-notifications"
SECTION = "## Add it to your Django site"
MARKER = re.compile(r"<!-- host-site: (shell|append (\S+)) -->")

# --- The host's own pieces: not the README's ----------------------------------------------

HOST_USER_MODEL = """
from django.contrib.auth.base_user import BaseUserManager
from django.contrib.auth.models import AbstractUser
from django.db import models


class UserManager(BaseUserManager):
    use_in_migrations = True

    def _create_user(self, email, password, **extra_fields):
        if not email:
            raise ValueError("An e-mail address is required.")
        user = self.model(email=self.normalize_email(email), **extra_fields)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_user(self, email, password=None, **extra_fields):
        extra_fields.setdefault("is_staff", False)
        extra_fields.setdefault("is_superuser", False)
        return self._create_user(email, password, **extra_fields)

    def create_superuser(self, email, password=None, **extra_fields):
        extra_fields.setdefault("is_staff", True)
        extra_fields.setdefault("is_superuser", True)
        return self._create_user(email, password, **extra_fields)


class User(AbstractUser):
    username = None
    email = models.EmailField("email address", unique=True)

    USERNAME_FIELD = "email"
    REQUIRED_FIELDS = []

    objects = UserManager()
"""

HOST_LOGIN_TEMPLATE = """<!doctype html>
<title>Sign in to mysite</title>
<h1>Sign in to mysite</h1>
<form method="post">
  {% csrf_token %}
  {{ form.as_p }}
  <input type="hidden" name="next" value="{{ next }}">
  <button type="submit">Sign in</button>
</form>
"""

HOST_SETTINGS = """
INSTALLED_APPS += ["accounts"]
AUTH_USER_MODEL = "accounts.User"
"""

HOST_URLS = """
from django.urls import include

urlpatterns += [path("accounts/", include("django.contrib.auth.urls"))]
"""

# The variant of the site that registers its user model in the admin, searchable, with the
# README's line for "Send notification…" on the user list.
HOST_USER_ADMIN = """
from django.contrib import admin

from notifications.admin import NotifyUsersMixin

from .models import User


@admin.register(User)
class UserAdmin(NotifyUsersMixin, admin.ModelAdmin):
    list_display = ["email", "is_staff"]
    ordering = ["email"]
    search_fields = ["email"]
"""

# Run by `manage.py shell -c` in the host's site: the admin's notification pages and, where
# the host registers its user model, autocomplete and the user list's action. Prints JSON.
ADMIN_PROBE = """
import json

from django.contrib.auth import get_user_model
from django.test import Client
from django.test.utils import setup_test_environment

from notifications.models import Notification

setup_test_environment()
user = get_user_model().objects.get(email=EMAIL)
client = Client()
client.force_login(user)
NOTIFICATIONS = "/admin/notifications/notification/"
found = {}
add = client.get(NOTIFICATIONS + "add/")
found["add form"] = add.status_code
found["autocomplete"] = "admin/autocomplete" in add.content.decode()
saved = client.post(NOTIFICATIONS + "add/", {"user": str(user.pk), "text": "Added in the admin"})
found["added"] = saved.status_code, Notification.objects.filter(text="Added in the admin").count()
listed = client.get(NOTIFICATIONS, {"user": EMAIL}).content.decode()
found["filter"] = "Added in the admin" in listed, 'placeholder="email address"' in listed
found["search"] = "Added in the admin" in client.get(NOTIFICATIONS, {"q": "ada@"}).content.decode()
found["broadcast form"] = client.get(NOTIFICATIONS + "broadcast/").status_code
if found["autocomplete"]:
    query = {"term": "ada", "app_label": "notifications", "model_name": "notification",
             "field_name": "user"}
    found["autocomplete results"] = [
        r["text"] for r in client.get("/admin/autocomplete/", query).json()["results"]
    ]
    sent = client.post("/admin/accounts/user/", {
        "action": "notify_users", "_selected_action": [str(user.pk)], "select_across": "0",
        "text": "From the user list", "apply": "Send",
    })
    found["user action"] = sent.status_code, Notification.objects.filter(
        user=user, text="From the user list").count()
print("probe", json.dumps(found))
"""


# --- The README's steps --------------------------------------------------------------------


@dataclass
class Step:
    kind: str  # "shell" or "append"
    text: str
    path: str = ""  # for "append": the file, relative to the project folder


def readme_steps() -> list[Step]:
    """Return the marked blocks of the README's "Add it to your Django site", in order.

    Every fenced block of the section must carry a marker: an unmarked one would be a step
    the test does not apply.
    """
    readme = (PROJECT / "README.md").read_text()
    start = readme.index(SECTION)
    end = readme.find("\n## ", start + len(SECTION))
    lines = readme[start : end if end != -1 else None].splitlines()
    steps: list[Step] = []
    marker: re.Match[str] | None = None
    index = 0
    while index < len(lines):
        line = lines[index]
        index += 1
        if found := MARKER.search(line):
            marker = found
            continue
        if not line.strip().startswith("```"):
            if line.strip():
                marker = None
            continue
        indent = line[: len(line) - len(line.lstrip())]
        block: list[str] = []
        while lines[index].strip() != "```":
            block.append(lines[index].removeprefix(indent))
            index += 1
        index += 1
        assert marker is not None, f"a block of {SECTION!r} has no host-site marker: {block}"
        kind, path = ("shell", "") if marker.group(1) == "shell" else ("append", marker.group(2))
        steps.append(Step(kind, textwrap.dedent("\n".join(block)) + "\n", path))
        marker = None
    return steps


def serve_command(line: str, port: int) -> list[str]:
    """Return the README's daphne command with its port replaced, checked to bind 127.0.0.1."""
    argv = shlex.split(line)
    assert argv[argv.index("-b") + 1] == "127.0.0.1", line
    argv[argv.index("-p") + 1] = str(port)
    return argv


# --- Building the site ---------------------------------------------------------------------


@dataclass
class HostSite:
    folder: Path  # the project folder: manage.py, mysite/, accounts/
    venv: Path
    env: dict[str, str]
    serve: str  # the README's serve command, as written

    def run(
        self,
        *command: str,
        timeout: float = 120,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> str:
        """Run a command in the site's folder and virtualenv; return its output, or fail."""
        done = subprocess.run(
            command,
            cwd=cwd or self.folder,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert done.returncode == 0, f"{command} failed:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def manage(self, *arguments: str, **run: Any) -> str:
        """Run `python manage.py` in the site's folder (or `cwd`) and virtualenv."""
        return self.run(str(self.venv / "bin" / "python"), "manage.py", *arguments, **run)


def host_env(venv: Path) -> dict[str, str]:
    """Return an environment like an activated virtualenv's, without this suite's settings."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DJANGO_SETTINGS_MODULE", "PYTHONPATH", "PYTHONHOME", "DATABASE_URL")
        and not key.startswith("NOTIFICATIONS_")
    }
    env["VIRTUAL_ENV"] = str(venv)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


def build_wheel(work: Path) -> Path:
    """Build the app's wheel from a copy of the repository (the build leaves nothing here)."""
    source = work / "source"
    shutil.copytree(
        PROJECT,
        source,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache",
            "test-artifacts", "*.sqlite3*", ".env",
        ),
    )  # fmt: skip
    wheels = work / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(wheels), "."],
        cwd=source,
        check=True,
        capture_output=True,
        timeout=300,
    )
    [wheel] = wheels.glob("django_live_notifications-*.whl")
    return wheel


def append(path: Path, text: str) -> None:
    with path.open("a") as file:
        file.write(f"\n{text}")


@pytest.fixture(scope="module")
def host_site(tmp_path_factory: pytest.TempPathFactory) -> HostSite:
    work = tmp_path_factory.mktemp("host")
    wheel = build_wheel(work)
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    site = HostSite(work / "mysite", venv, host_env(venv), serve="")
    site.folder.mkdir()

    # The host's site before the app: Django, startproject, its user model and login page.
    site.run("bash", "-c", pinned("python -m pip install --quiet Django"), timeout=300)
    site.run(str(venv / "bin" / "django-admin"), "startproject", "mysite", ".")
    site.manage("startapp", "accounts")
    (site.folder / "accounts" / "models.py").write_text(HOST_USER_MODEL)
    templates = site.folder / "accounts" / "templates" / "registration"
    templates.mkdir(parents=True)
    (templates / "login.html").write_text(HOST_LOGIN_TEMPLATE)
    append(site.folder / "mysite" / "settings.py", HOST_SETTINGS)
    append(site.folder / "mysite" / "urls.py", HOST_URLS)
    site.manage("makemigrations", "accounts")

    # The README's steps, as written.
    steps = readme_steps()
    assert sum(PLACEHOLDER in step.text for step in steps) == 1, "no single install command"
    serve_lines: list[str] = []
    for step in steps:
        if step.kind == "append":
            append(site.folder / step.path, step.text)
            continue
        for line in step.text.splitlines():
            if line.split()[:1] == ["daphne"]:
                serve_lines.append(line)
            elif line.strip() and not line.lstrip().startswith("#"):
                site.run(
                    "bash",
                    "-c",
                    pinned(line.replace(PLACEHOLDER, shlex.quote(str(wheel)))),
                    timeout=300,
                )
    assert len(serve_lines) == 1, f"the README has no single daphne command: {serve_lines}"
    site.serve = serve_lines[0]
    return site


def pinned(line: str) -> str:
    """Return a shell line with its pip install pinned to the suite's versions (constraints.txt)."""
    if re.match(r"\s*python -m pip install ", line):
        line += f" -c {shlex.quote(str(PROJECT / 'constraints.txt'))}"
    return line


@pytest.fixture(scope="module")
def host_user(host_site: HostSite) -> str:
    # Made by the host's own manager, through Django's command: a superuser, for the admin.
    env = {"DJANGO_SUPERUSER_PASSWORD": PASSWORD}
    host_site.manage("createsuperuser", "--noinput", "--email", EMAIL, env=env)
    return EMAIL


@pytest.fixture(scope="module")
def host_server(
    host_site: HostSite, host_user: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DaphneServer]:
    log = tmp_path_factory.mktemp("host-daphne") / "daphne.log"
    command = serve_command(host_site.serve, port=0)
    # The host venv's daphne, found on its PATH as the README's command would be.
    executable = shutil.which(command[0], path=host_site.env["PATH"])
    assert executable == str(host_site.venv / "bin" / "daphne"), executable
    with run_daphne(
        [executable, *command[1:]], host_site.folder, host_site.env, log, timeout=60
    ) as server:
        yield server


# --- The tests -----------------------------------------------------------------------------


def test_readme_steps_leave_the_system_checks_silent(host_site: HostSite) -> None:
    output = host_site.manage("check", "--fail-level", "WARNING")
    assert "System check identified no issues" in output, output


@MODULE_LOOP
async def test_signed_out_page_goes_to_the_hosts_login_and_the_stream_refuses(
    host_server: DaphneServer,
) -> None:
    async with httpx.AsyncClient(base_url=host_server.url, timeout=10) as http:
        page = await http.get("/notifications/")
        assert page.status_code == 302
        assert page.headers["location"] == "/accounts/login/?next=/notifications/"
        stream = await http.get("/notifications/stream/")
        assert stream.status_code == 403, stream.text


@MODULE_LOOP
async def test_login_then_a_notification_from_another_process_reaches_page_and_stream(
    browser: Any, host_site: HostSite, host_server: DaphneServer, host_user: str
) -> None:
    context = await browser.new_context()
    try:
        page = await context.new_page()
        failed: list[str] = []
        page.on(
            "response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None
        )
        await page.goto(f"{host_server.url}/notifications/")
        await page.wait_for_url(re.compile(r"/accounts/login/\?next="))
        assert await page.title() == "Sign in to mysite"
        await page.get_by_label("Email address").fill(host_user)
        await page.get_by_label("Password").fill(PASSWORD)
        await page.get_by_role("button", name="Sign in").click()
        await page.wait_for_url(f"{host_server.url}/notifications/")
        live = page.locator("#connection[data-state=live]")
        try:
            await live.wait_for(timeout=10 * MS)
        except Exception as exc:
            raise AssertionError(f"the page did not go live; failed requests: {failed}") from exc

        [session] = [c["value"] for c in await context.cookies() if c["name"] == "sessionid"]
        async with (
            httpx.AsyncClient(
                base_url=host_server.url,
                cookies={"sessionid": session},
                timeout=httpx.Timeout(10, read=60),
            ) as http,
            StreamReader(http) as stream,
        ):
            assert stream.status == 200
            text = "Sent by the host's code, from another process"
            sent = await send_from_another_process(host_site, host_user, text)

            item = page.locator(f"#notifications li[data-id='{sent}']")
            await item.wait_for(timeout=10 * MS)
            assert await item.locator(".text").text_content() == text
            event = await stream.next(timeout=10)
            assert json.loads(event.data)["text"] == text
            assert event.id == str(sent)
    finally:
        await context.close()


async def send_from_another_process(site: HostSite, email: str, text: str) -> int:
    """Send with `send_notification` in `manage.py shell -c`; return the notification's id."""
    code = (
        "from django.contrib.auth import get_user_model\n"
        "from notifications.services import send_notification\n"
        f"user = get_user_model().objects.get(email={email!r})\n"
        f"print('sent', send_notification(user, {text!r}).pk)\n"
    )
    process = await asyncio.create_subprocess_exec(
        str(site.venv / "bin" / "python"),
        "manage.py",
        "shell",
        "-c",
        code,
        cwd=site.folder,
        env=site.env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, stderr.decode()
    match = re.search(r"^sent (\d+)$", stdout.decode(), re.MULTILINE)
    assert match, stdout.decode()
    return int(match.group(1))


def admin_probe(site: HostSite, folder: Path) -> dict[str, Any]:
    """Run ADMIN_PROBE in the site at `folder`; return what it found."""
    code = f"EMAIL = {EMAIL!r}\n{ADMIN_PROBE}"
    output = site.manage("shell", "-c", code, cwd=folder)
    match = re.search(r"^probe (.*)$", output, re.MULTILINE)
    assert match, output
    found: dict[str, Any] = json.loads(match.group(1))
    return found


def test_admin_works_without_the_user_model_in_the_admin(
    host_site: HostSite, host_user: str
) -> None:
    assert admin_probe(host_site, host_site.folder) == {
        "add form": 200,
        # A box for the user's id: autocomplete needs a user admin with search_fields.
        "autocomplete": False,
        "added": [302, 1],
        "filter": [True, True],
        "search": True,
        "broadcast form": 200,
    }


def test_a_user_admin_with_search_gets_autocomplete_and_the_user_list_action(
    host_site: HostSite, host_user: str, tmp_path: Path
) -> None:
    # The same site, as a host that registers its user model (README: NotifyUsersMixin).
    variant = tmp_path / "mysite"
    shutil.copytree(host_site.folder, variant, ignore=shutil.ignore_patterns("db.sqlite3*"))
    (variant / "accounts" / "admin.py").write_text(HOST_USER_ADMIN)
    output = host_site.manage("check", "--fail-level", "WARNING", cwd=variant)
    assert "System check identified no issues" in output, output
    host_site.manage("migrate", cwd=variant)
    env = {"DJANGO_SUPERUSER_PASSWORD": PASSWORD}
    host_site.manage("createsuperuser", "--noinput", "--email", EMAIL, cwd=variant, env=env)

    assert admin_probe(host_site, variant) == {
        "add form": 200,
        "autocomplete": True,
        "added": [302, 1],
        "filter": [True, True],
        "search": True,
        "broadcast form": 200,
        "autocomplete results": [EMAIL],
        "user action": [302, 1],
    }
