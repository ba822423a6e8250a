"""This project's settings, with a URLconf and templates of a site that only adds the bell."""

from __future__ import annotations

from pathlib import Path

from site_config.settings import *  # noqa: F403
from site_config.settings import TEMPLATES

ROOT_URLCONF = "tests.host_site.urls"
# The site's own templates only: the app's pages fall back to the app's notifications/base.html.
TEMPLATES = [{**TEMPLATES[0], "DIRS": [Path(__file__).resolve().parent / "templates"]}]
