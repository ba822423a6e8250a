"""One shared thread for the sync work of every stream: the optional line in a site's asgi.py.

    from notifications.asgi import with_shared_stream_thread
    application = with_shared_stream_thread(get_asgi_application())

Django runs each request in its own ThreadSensitiveContext, whose one-thread executor starts
with the request's first sync step (the `request_started` receivers) and lives until the
response closes: without this, an open stream keeps an idle OS thread. A stream's only sync
steps are those receivers, at its start and end, so streams can share one thread instead;
Django's handler, middleware and view run as usual, and every other request keeps its own thread.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from asgiref.sync import ThreadSensitiveContext
from django.urls import NoReverseMatch, reverse

ASGIApplication = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


def with_shared_stream_thread(application: ASGIApplication) -> ASGIApplication:
    """Return `application` with every notification stream's sync work on one shared thread."""
    executor: ThreadPoolExecutor | None = None
    stream_path: str | None = None

    async def shared_stream_thread(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal executor, stream_path
        if stream_path is None:
            # From the URLconf, so the two cannot drift apart; read on the first request, when
            # the URLconf is loaded. A site that does not mount the app has no stream.
            try:
                stream_path = reverse("notifications:stream")
            except NoReverseMatch:
                stream_path = ""
        if scope["type"] == "http" and stream_path and scope["path"] == stream_path:
            if executor is None:
                executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="streams")
            async with ThreadSensitiveContext(executor=executor):
                await application(scope, receive, send)
        else:
            await application(scope, receive, send)

    return shared_stream_thread
