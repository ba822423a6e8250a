"""The field rules of notifications.validation: links and levels (text is in test_send.py)."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from notifications.validation import LEVELS, validate_level, validate_url


@pytest.mark.parametrize(
    "url",
    [
        "",
        "/",
        "/orders/42",
        "/orders/42?tab=history&x=%20y#top",
        "/caf\u00e9",
        "https://example.com",
        "https://example.com/",
        "HTTPS://EXAMPLE.COM/Path",
        "http://example.com:8080/a/b?c=d#e",
        "http://[::1]:8000/",
        "https://xn--bcher-kva.example/",
        "https://b\u00fccher.example/",
    ],
)
def test_accepts_http_links_and_site_paths(url: str) -> None:
    validate_url(url)


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("javascript:alert(1)", "url_scheme"),
        ("JavaScript:alert(1)", "url_scheme"),
        ("jAvAsCrIpT:alert(1)", "url_scheme"),
        ("data:text/html,<script>alert(1)</script>", "url_scheme"),
        ("vbscript:msgbox(1)", "url_scheme"),
        ("file:///etc/passwd", "url_scheme"),
        ("mailto:someone@example.com", "url_scheme"),
        ("ftp://example.com/", "url_scheme"),
        ("blob:https://example.com/uuid", "url_scheme"),
        # Browsers remove tabs and newlines anywhere in a URL, and strip leading spaces and
        # controls: each of these would run as javascript:.
        ("java\tscript:alert(1)", "url_character"),
        ("java\nscript:alert(1)", "url_character"),
        ("java\rscript:alert(1)", "url_character"),
        (" javascript:alert(1)", "url_character"),
        ("\x01javascript:alert(1)", "url_character"),
        ("\x00javascript:alert(1)", "url_character"),
        ("javascript\x00:alert(1)", "url_character"),
        ("\u00a0javascript:alert(1)", "url_character"),
        ("\u200bjavascript:alert(1)", "url_character"),
        ("\ufeffjavascript:alert(1)", "url_character"),
        ("https://example.com/\u202egnp.exe", "url_character"),
        ("https://example.com/a b", "url_character"),
        ("https://example.com/\x7f", "url_character"),
        ("https://example.com/\x85", "url_character"),
        ("/orders\n/42", "url_character"),
        ("/path ", "url_character"),
        # Scheme-relative: another host.
        ("//evil.example/", "url_scheme_relative"),
        ("///evil.example/", "url_scheme_relative"),
        # Browsers read a backslash as a slash in http(s) URLs: /\host is //host.
        ("/\\evil.example/", "url_character"),
        ("https:\\\\evil.example", "url_character"),
        # Relative without a leading slash, or not a URL at all.
        ("orders/42", "url_relative"),
        ("?tab=1", "url_relative"),
        ("#top", "url_relative"),
        ("example.com", "url_relative"),
        ("1http://example.com", "url_relative"),
        (":foo", "url_relative"),
        # http(s) without a host, or with a disguise before it.
        ("https:", "url_host"),
        ("https:/example.com", "url_host"),
        ("https:example.com", "url_host"),
        ("https://", "url_host"),
        ("https://:80/", "url_host"),
        ("https://example.com@evil.example/", "url_credentials"),
        ("https://user:pass@example.com/", "url_credentials"),
        ("https://example.com:port/", "url_invalid"),
        ("http://[::1/", "url_invalid"),
        ("https://" + "a" * 2048, "url_length"),
    ],
)
def test_refuses_other_schemes_and_disguised_links(url: str, code: str) -> None:
    with pytest.raises(ValidationError) as caught:
        validate_url(url)
    assert caught.value.code == code
    message = " ".join(caught.value.messages)
    assert len(message) < 400
    assert "%(" not in message


def test_the_refused_scheme_is_named_in_the_message() -> None:
    with pytest.raises(ValidationError, match="scheme javascript: are not allowed"):
        validate_url("JAVASCRIPT:alert(1)")


def test_the_invisible_character_is_named_with_its_position() -> None:
    with pytest.raises(ValidationError, match=r"U\+200B \(zero width space\) at position 1"):
        validate_url("\u200bhttps://example.com")


def test_a_link_that_is_not_text_is_refused() -> None:
    with pytest.raises(ValidationError, match="must be text"):
        validate_url(42)  # type: ignore[arg-type]


@pytest.mark.parametrize("level", LEVELS)
def test_accepts_the_four_levels(level: str) -> None:
    validate_level(level)


@pytest.mark.parametrize("level", ["", "INFO", "Info", "debug", "critical", " info", None, 1])
def test_refuses_any_other_level_naming_the_allowed_ones(level: object) -> None:
    with pytest.raises(ValidationError) as caught:
        validate_level(level)  # type: ignore[arg-type]
    assert caught.value.code == "level"
    assert "info, success, warning, error" in caught.value.messages[0]
