"""The ASGI application daphne serves: `daphne site_config.asgi:application`."""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from asgiref.sync import ThreadSensitiveContext
from django.core.asgi import get_asgi_application
from django.urls import reverse

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "site_config.settings")

django_application = get_asgi_application()

_stream_executor: ThreadPoolExecutor | None = None


@functools.cache
def _stream_path() -> str:
    # From the URLconf, so the two cannot drift apart.
    return reverse("notifications:stream")


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Django's ASGI application, with one shared thread for the sync work of all streams.

    Django runs each request in its own ThreadSensitiveContext, whose one-thread executor starts
    with the request's first sync step (the `request_started` receivers) and lives until the
    response closes: an open stream keeps an idle OS thread. A stream's only sync steps are
    those receivers, at its start and end, so streams share one thread instead; Django's handler,
    middleware and view run as usual. Every other request keeps its own thread.
    """
    if scope["type"] == "http" and scope["path"] == _stream_path():
        global _stream_executor
        if _stream_executor is None:
            _stream_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="streams")
        async with ThreadSensitiveContext(executor=_stream_executor):
            await django_application(scope, receive, send)
    else:
        await django_application(scope, receive, send)
