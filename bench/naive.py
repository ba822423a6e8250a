"""The reference design every figure is compared with: one query per stream per second.

What Django SSE tutorials do: an async view, login required through `await request.auser()`,
and a generator that every poll interval reads the user's undispatched recent notifications
with the async ORM, sends them (in the project's wire format), marks them dispatched (read,
then update) and sends a keepalive comment after a quiet while. Each stream keeps its own
thread (its request's ThreadSensitiveContext) and that thread's database connection for its
whole life, and the process runs one query per stream per interval.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta

from django.http import HttpRequest, HttpResponse, HttpResponseForbidden, StreamingHttpResponse
from django.utils import timezone
from django.views.decorators.http import require_GET

from notifications import conf, sse
from notifications.models import Notification
from notifications.stream import encode


@require_GET
async def stream(request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
    user = await request.auser()
    if not user.is_authenticated:
        # 403 rather than login_required's redirect, as the real stream (the client counts it).
        return HttpResponseForbidden("Not signed in.\n")
    response = StreamingHttpResponse(
        _events(user.pk), content_type="text/event-stream; charset=utf-8"
    )
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


async def _events(user_id: int) -> AsyncIterator[str]:
    yield sse.retry(conf.retry_milliseconds())
    interval = conf.poll_interval()
    keepalive = conf.keepalive()
    last_sent = time.monotonic()
    while True:
        since = timezone.now() - timedelta(seconds=conf.recent_window())
        rows = [
            n
            async for n in Notification.objects.filter(
                user_id=user_id, dispatched=False, created__gte=since
            ).order_by("id")
        ]
        if rows:
            yield "".join(encode(n) for n in rows)
            await Notification.objects.filter(pk__in=[n.pk for n in rows]).aupdate(
                dispatched=True, dispatched_at=timezone.now()
            )
            last_sent = time.monotonic()
        elif time.monotonic() - last_sent >= keepalive:
            yield sse.comment("keepalive")
            last_sent = time.monotonic()
        await asyncio.sleep(interval)
