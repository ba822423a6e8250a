"""The JSON shapes the browser sees, shared by the stream's events and the JSON API.

One place turns a Notification into a dict, so an event and an API listing of the same
notification carry the same fields, spelled the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .models import Notification


def notification(n: Notification) -> dict[str, Any]:
    """Return a notification as the stream and the API send it."""
    return {
        "id": n.pk,
        "text": n.text,
        "created": n.created.isoformat(timespec="microseconds"),
        "read": n.read_at is not None,
        "url": n.url or None,
        "level": n.level,
    }


def read(ids: Sequence[int], unread: int) -> dict[str, Any]:
    """Return the data of a `read` event for these ids."""
    return {"ids": list(ids), "unread": unread}


def all_read(newest: int, unread: int) -> dict[str, Any]:
    """Return the data of a `read` event for every notification up to `newest`."""
    return {"all": True, "newest": newest, "unread": unread}


def deleted(ids: Sequence[int], unread: int) -> dict[str, Any]:
    """Return the data of a `deleted` event for these ids."""
    return {"ids": list(ids), "unread": unread}
