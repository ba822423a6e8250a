"""The ASGI application daphne serves: `daphne site_config.asgi:application`."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

from notifications.asgi import with_shared_stream_thread

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "site_config.settings")

# Every stream's sync work on one shared thread instead of an idle thread per stream.
application = with_shared_stream_thread(get_asgi_application())
