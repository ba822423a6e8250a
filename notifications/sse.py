"""The Server-Sent Events wire format: pure functions from values to frames.

https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation
"""

from __future__ import annotations

import json
import re
from typing import Any

# A field value ends at CR, LF or CRLF; nothing else splits it.
_LINE_BREAK = re.compile(r"\r\n|\r|\n")

# Characters that JSON leaves raw but that line splitters other than the spec's (Python's
# str.splitlines(), which some SSE clients use) treat as line breaks.
_JSON_ESCAPES = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def _check_field(name: str, value: str) -> str:
    if "\r" in value or "\n" in value or "\0" in value:
        raise ValueError(f"An SSE {name} cannot contain CR, LF or NUL: {value!r}")
    return value


def event(data: str, *, id: str | int | None = None, event: str | None = None) -> str:
    """Return one event: optional `id:` and `event:` fields, one `data:` line per line of data."""
    lines = []
    if id is not None:
        lines.append(f"id: {_check_field('id', str(id))}\n")
    if event is not None:
        lines.append(f"event: {_check_field('event name', event)}\n")
    if "\n" in data or "\r" in data:
        lines.extend(f"data: {line}\n" for line in _LINE_BREAK.split(data))
    else:
        # One line, as every JSON payload is: no split (an event per stream per row).
        lines.append(f"data: {data}\n")
    lines.append("\n")
    return "".join(lines)


def last_event_id(id: str | int) -> str:
    """Return a block with an `id:` field alone: it sets the client's last event ID, no event.

    (HTML Standard 9.2.6: dispatching sets the last event ID string before it returns for an
    empty data buffer.)
    """
    return f"id: {_check_field('id', str(id))}\n\n"


def comment(text: str = "") -> str:
    """Return a comment line, which clients ignore and proxies see as traffic."""
    return f": {_check_field('comment', text)}\n" if text else ":\n"


def retry(milliseconds: int) -> str:
    """Return a `retry:` field that sets the client's reconnection delay."""
    if milliseconds < 0:
        raise ValueError(f"retry must be a non-negative number of milliseconds: {milliseconds}")
    return f"retry: {int(milliseconds)}\n\n"


# One encoder for every event: json.dumps() with options builds a new one per call.
_ENCODER = json.JSONEncoder(ensure_ascii=False)


def json_data(value: Any) -> str:
    """Return `value` as JSON on a single line that every SSE line splitter keeps whole."""
    text = _ENCODER.encode(value)
    # isascii() reads a flag the string carries; translate() looks up every character.
    return text if text.isascii() else text.translate(_JSON_ESCAPES)
