"""The JSON API through Django's test client, with CSRF checks enforced."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth.models import AbstractUser
from django.db import DatabaseError
from django.test import Client
from django.urls import reverse

from notifications import api, inbox
from notifications.models import Change, Notification

from .support import make_user

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("empty_change_log")]

LIST = "/notifications/api/notifications/"
READ = "/notifications/api/read/"
# A CSRF secret as the csrftoken cookie holds it; the header repeats it.
TOKEN = "abcdefghijklmnopqrstuvwxyzABCDEF"


def signed_in(user: AbstractUser) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    client.cookies["csrftoken"] = TOKEN
    return client


def post(client: Client, body: Any, **extra: Any) -> Any:
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    extra.setdefault("content_type", "application/json")
    extra.setdefault("headers", {"X-CSRFToken": TOKEN})
    return client.post(READ, data, **extra)


def make(user: AbstractUser, count: int, **fields: Any) -> list[Notification]:
    return [Notification.objects.create(user=user, text=f"n{i}", **fields) for i in range(count)]


def assert_json_error(response: Any, status: int, fragment: str) -> None:
    assert response.status_code == status, response.content[:500]
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    assert fragment in body["error"], body["error"]


def test_the_urls_have_their_names() -> None:
    assert reverse("notifications:api-notifications") == LIST
    assert reverse("notifications:api-read") == READ


# Listing.


def test_list_shape_newest_first_with_the_unread_count(
    alice: AbstractUser, bob: AbstractUser
) -> None:
    first = Notification.objects.create(user=alice, text="Build finished\nall green")
    second = Notification.objects.create(
        user=alice, text="Invoice", url="https://example.com/i/1", level="warning"
    )
    Notification.objects.create(user=bob, text="bob's")
    inbox.mark_read(alice.pk, [first.pk])

    response = signed_in(alice).get(LIST)

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response["Cache-Control"] == "no-store"
    assert response.json() == {
        "notifications": [
            {
                "id": second.pk,
                "text": "Invoice",
                "created": second.created.isoformat(timespec="microseconds"),
                "read": False,
                "url": "https://example.com/i/1",
                "level": "warning",
            },
            {
                "id": first.pk,
                "text": "Build finished\nall green",
                "created": first.created.isoformat(timespec="microseconds"),
                "read": True,
                "url": None,
                "level": "info",
            },
        ],
        "unread": 1,
        "next": None,
    }


def test_paging_follows_next_until_it_is_null(alice: AbstractUser) -> None:
    rows = make(alice, 7)
    client = signed_in(alice)

    seen: list[int] = []
    url: str | None = f"{LIST}?limit=3"
    pages = 0
    while url is not None:
        body = client.get(url).json()
        seen.extend(n["id"] for n in body["notifications"])
        url = body["next"]
        pages += 1
        if url is not None:
            assert url.startswith(f"{LIST}?")
            assert "limit=3" in url

    assert pages == 3
    assert seen == [n.pk for n in reversed(rows)]


def test_before_lists_older_ones_and_the_default_limit_is_20(alice: AbstractUser) -> None:
    rows = make(alice, 25)
    client = signed_in(alice)

    body = client.get(LIST).json()
    assert len(body["notifications"]) == 20
    assert body["next"] == f"{LIST}?before={rows[5].pk}&limit=20"

    older = client.get(LIST, {"before": rows[3].pk}).json()
    assert [n["id"] for n in older["notifications"]] == [rows[2].pk, rows[1].pk, rows[0].pk]
    assert older["next"] is None


def test_limit_100_is_the_most(alice: AbstractUser) -> None:
    make(alice, 101)
    body = signed_in(alice).get(LIST, {"limit": "100"}).json()
    assert len(body["notifications"]) == 100
    assert body["next"] is not None


def test_listing_marks_nothing_read_or_dispatched(alice: AbstractUser) -> None:
    make(alice, 3)
    signed_in(alice).get(LIST)
    assert Notification.objects.filter(dispatched=False, read_at__isnull=True).count() == 3


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ({"limit": "0"}, "limit must be a whole number from 1 to 100"),
        ({"limit": "101"}, "limit must be"),
        ({"limit": "-1"}, "limit must be"),
        ({"limit": "abc"}, "limit must be"),
        ({"limit": "1.5"}, "limit must be"),
        ({"limit": "\u0661"}, "limit must be"),
        ({"limit": "9" * 400}, "limit must be"),
        ({"before": "0"}, "before must be a notification id"),
        ({"before": "x"}, "before must be"),
        ({"before": "-5"}, "before must be"),
        ({"before": "9" * 19}, "before must be"),
        ({"before": "9" * 400}, "before must be"),
    ],
)
def test_bad_before_or_limit_gets_400_with_a_message(
    alice: AbstractUser, query: dict[str, str], fragment: str
) -> None:
    assert_json_error(signed_in(alice).get(LIST, query), 400, fragment)


def test_empty_parameters_mean_the_defaults(alice: AbstractUser) -> None:
    make(alice, 2)
    body = signed_in(alice).get(LIST, {"before": "", "limit": ""}).json()
    assert len(body["notifications"]) == 2


# Marking read.


def test_read_ids_marks_the_callers_own_and_answers_the_unread_count(
    alice: AbstractUser, bob: AbstractUser
) -> None:
    mine = make(alice, 3)
    theirs = make(bob, 2)

    response = post(signed_in(alice), {"ids": [mine[0].pk, theirs[0].pk, 999_999]})

    assert response.status_code == 200
    assert response.json() == {"unread": 2}
    assert list(
        Notification.objects.filter(read_at__isnull=False).values_list("pk", flat=True)
    ) == [mine[0].pk]
    assert inbox.unread_count(bob.pk) == 2


def test_read_all_marks_every_unread_one(alice: AbstractUser, bob: AbstractUser) -> None:
    rows = make(alice, 3)
    make(bob, 1)
    assert post(signed_in(alice), {"all": True}).json() == {"unread": 0}
    change = Change.objects.get()
    assert (change.kind, change.newest) == ("read", rows[-1].pk)
    assert inbox.unread_count(bob.pk) == 1


def test_read_all_up_to_newest_leaves_later_ones(alice: AbstractUser) -> None:
    rows = make(alice, 3)
    assert post(signed_in(alice), {"all": True, "newest": rows[0].pk}).json() == {"unread": 2}


def test_ids_already_read_keep_their_first_read_time(alice: AbstractUser) -> None:
    (row,) = make(alice, 1)
    client = signed_in(alice)
    post(client, {"ids": [row.pk]})
    first = Notification.objects.get().read_at
    post(client, {"ids": [row.pk]})
    post(client, {"all": True})
    assert Notification.objects.get().read_at == first


def test_an_empty_list_of_ids_changes_nothing(alice: AbstractUser) -> None:
    make(alice, 2)
    assert post(signed_in(alice), {"ids": []}).json() == {"unread": 2}


def test_the_most_ids_per_request_are_accepted(alice: AbstractUser) -> None:
    rows = make(alice, 2)
    ids = [rows[0].pk, *range(10**9, 10**9 + api.MAX_IDS - 1)]
    assert post(signed_in(alice), {"ids": ids}).json() == {"unread": 1}


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ("{", "not valid JSON"),
        ("   ", "not valid JSON"),
        ('{"ids": [1,]}', "not valid JSON"),
        ('{"ids": [NaN]}', "not valid JSON"),
        ('{"ids": [Infinity]}', "not valid JSON"),
        ("[" * 50_000 + "]" * 50_000, "too large"),
        ("[" * 30_000 + "]" * 30_000, "not valid JSON"),
        (b"\xff\xfe{}", "not UTF-8"),
        ([1, 2], 'must be {"ids"'),
        ("null", 'must be {"ids"'),
        ('"all"', 'must be {"ids"'),
        ({}, "exactly one"),
        ({"ids": [1], "all": True}, "exactly one"),
        ({"all": False}, '"all" must be true'),
        ({"all": 1}, '"all" must be true'),
        ({"all": "true"}, '"all" must be true'),
        ({"all": True, "newest": "5"}, '"newest" must be'),
        ({"all": True, "newest": 0}, '"newest" must be'),
        ({"ids": [1], "newest": 5}, '"newest" goes with'),
        ({"ids": "1,2"}, '"ids" must be a list'),
        ({"ids": {"1": 1}}, '"ids" must be a list'),
        ({"ids": None}, '"ids" must be a list'),
        ({"ids": ["1"]}, '"ids" must hold notification ids'),
        ({"ids": [1.0]}, '"ids" must hold'),
        ({"ids": [True]}, '"ids" must hold'),
        ({"ids": [0]}, '"ids" must hold'),
        ({"ids": [-3]}, '"ids" must hold'),
        ({"ids": [2**63]}, '"ids" must hold'),
        ({"ids": [10**400]}, '"ids" must hold'),
        ({"ids": [[1]]}, '"ids" must hold'),
        ({"ids": [None]}, '"ids" must hold'),
        ({"ids": list(range(1, api.MAX_IDS + 2))}, "at most 1,000 per request"),
        ({"ids": [1], "extra": 1}, "unknown key 'extra'"),
    ],
)
def test_a_malformed_body_gets_400_with_a_message(
    alice: AbstractUser, body: Any, fragment: str
) -> None:
    make(alice, 1)
    response = post(signed_in(alice), body)
    assert_json_error(response, 400, fragment)
    assert len(response.json()["error"]) < 300
    assert not Notification.objects.filter(read_at__isnull=False).exists()


@pytest.mark.parametrize(
    "content_type",
    ["application/x-www-form-urlencoded", "text/plain", "multipart/form-data; boundary=x", ""],
)
def test_a_body_that_is_not_declared_json_gets_400(alice: AbstractUser, content_type: str) -> None:
    (row,) = make(alice, 1)
    response = post(signed_in(alice), json.dumps({"ids": [row.pk]}), content_type=content_type)
    assert_json_error(response, 400, "Content-Type: application/json")
    assert Notification.objects.get().read_at is None


def test_json_with_a_charset_is_json(alice: AbstractUser) -> None:
    (row,) = make(alice, 1)
    response = post(
        signed_in(alice), {"ids": [row.pk]}, content_type="application/json; charset=utf-8"
    )
    assert response.json() == {"unread": 0}


# Refusals: method, authentication, CSRF, database, unknown URLs.


def test_post_without_the_csrf_token_is_refused_with_json(alice: AbstractUser) -> None:
    (row,) = make(alice, 1)
    client = signed_in(alice)
    response = post(client, {"ids": [row.pk]}, headers={})
    assert_json_error(response, 403, "CSRF check failed")
    wrong = post(client, {"ids": [row.pk]}, headers={"X-CSRFToken": "B" * 32})
    assert_json_error(wrong, 403, "CSRF check failed")
    assert Notification.objects.get().read_at is None


def test_post_from_another_origin_is_refused(alice: AbstractUser) -> None:
    (row,) = make(alice, 1)
    response = post(
        signed_in(alice),
        {"ids": [row.pk]},
        headers={"X-CSRFToken": TOKEN, "Origin": "https://evil.example"},
    )
    assert_json_error(response, 403, "CSRF check failed")


@pytest.mark.parametrize("method", ["get", "post"])
def test_anonymous_gets_403_json_not_a_redirect(db: None, method: str) -> None:
    client = Client(enforce_csrf_checks=True)
    response = client.get(LIST) if method == "get" else post(client, {"all": True})
    assert_json_error(response, 403, "Not signed in")
    assert "Location" not in response


def test_an_inactive_user_is_anonymous(db: None) -> None:
    carol = make_user("carol")
    client = signed_in(carol)
    carol.is_active = False
    carol.save()
    assert_json_error(client.get(LIST), 403, "Not signed in")


@pytest.mark.parametrize(
    ("url", "method", "allow"),
    [
        (LIST, "post", "GET, HEAD"),
        (LIST, "delete", "GET, HEAD"),
        (READ, "get", "POST"),
        (READ, "put", "POST"),
    ],
)
def test_the_wrong_method_gets_405_json_with_allow(
    alice: AbstractUser, url: str, method: str, allow: str
) -> None:
    response = getattr(signed_in(alice), method)(url)
    assert_json_error(response, 405, "is not allowed here")
    assert response["Allow"] == allow


def test_an_unknown_api_url_gets_404_json(alice: AbstractUser) -> None:
    assert_json_error(signed_in(alice).get("/notifications/api/nope/"), 404, "No API at")


def test_a_database_error_gets_503_json(
    alice: AbstractUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = signed_in(alice)

    def fail(*args: object, **kwargs: object) -> None:
        raise DatabaseError("connection refused")

    monkeypatch.setattr(inbox, "unread_count", fail)
    response = client.get(LIST)
    assert_json_error(response, 503, "not answering")
    assert response["Retry-After"] == "5"
