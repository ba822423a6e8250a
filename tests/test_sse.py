from __future__ import annotations

import json

import pytest

from notifications import sse


def test_event_single_line() -> None:
    assert sse.event("hello", id=42, event="notification") == (
        "id: 42\nevent: notification\ndata: hello\n\n"
    )


def test_event_without_id_or_name() -> None:
    assert sse.event("hello") == "data: hello\n\n"


@pytest.mark.parametrize("data", ["a\nb", "a\rb", "a\r\nb"])
def test_event_splits_data_on_every_line_break(data: str) -> None:
    assert sse.event(data) == "data: a\ndata: b\n\n"


def test_event_keeps_empty_lines_and_other_separators() -> None:
    assert sse.event("\n\u2028x\n") == "data: \ndata: \u2028x\ndata: \n\n"


@pytest.mark.parametrize("bad", ["1\n2", "1\r", "1\x00"])
def test_event_rejects_a_broken_id(bad: str) -> None:
    with pytest.raises(ValueError, match="id"):
        sse.event("x", id=bad)


def test_event_rejects_a_broken_event_name() -> None:
    with pytest.raises(ValueError, match="event name"):
        sse.event("x", event="a\nb")


def test_last_event_id_is_a_block_with_an_id_alone() -> None:
    assert sse.last_event_id(105) == "id: 105\n\n"
    with pytest.raises(ValueError, match="id"):
        sse.last_event_id("1\n2")


def test_comment() -> None:
    assert sse.comment("keepalive") == ": keepalive\n"
    assert sse.comment() == ":\n"


def test_retry() -> None:
    assert sse.retry(2000) == "retry: 2000\n\n"
    with pytest.raises(ValueError):
        sse.retry(-1)


def test_json_data_is_one_line_whatever_the_text() -> None:
    text = "line one\nline two\r\nthree\rfour\u2028five\u2029six\x85seven\x0bé漢🎉"
    data = sse.json_data({"text": text})
    assert data == (
        '{"text": "line one\\nline two\\r\\nthree\\rfour\\u2028five\\u2029six\\u0085seven'
        '\\u000bé漢🎉"}'
    )
    assert len(data.splitlines()) == 1
    assert json.loads(data) == {"text": text}


def test_json_data_event_round_trips_20_kb_of_hostile_text() -> None:
    text = ("<script>alert('x')</script>\n\r\n\"quoted\" \\ \u2028 漢字 🎉 " * 400)[:20_000]
    frame = sse.event(sse.json_data({"id": 7, "text": text}), id=7, event="notification")
    lines = frame.split("\n")
    assert lines[:2] == ["id: 7", "event: notification"]
    assert lines[2].startswith("data: ")
    assert lines[3:] == ["", ""]
    assert json.loads(lines[2].removeprefix("data: ")) == {"id": 7, "text": text}


def test_json_data_matches_the_contract_example() -> None:
    data = sse.json_data(
        {
            "id": 42,
            "text": "Build finished\nall green",
            "created": "2026-11-21T09:00:00.123456+00:00",
        }
    )
    assert sse.event(data, id=42, event="notification") == (
        "id: 42\n"
        "event: notification\n"
        'data: {"id": 42, "text": "Build finished\\nall green", '
        '"created": "2026-11-21T09:00:00.123456+00:00"}\n'
        "\n"
    )
