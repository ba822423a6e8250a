"""The benchmark's ASGI application: the site's, plus the floor's raw stream (bench/floor.py)."""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")

from site_config.asgi import application as site_application  # noqa: E402

from .floor import wrap  # noqa: E402

application = wrap(site_application)
