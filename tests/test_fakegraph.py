"""Tests of the fake Graph API server itself."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import requests
from fakegraph import FakeGraph, Fault

PAGE, TOKEN = "111", "page-token-111"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def graph() -> Iterator[FakeGraph]:
    with FakeGraph({PAGE: TOKEN}) as fake:
        yield fake
        assert fake.errors == []


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def test_feed_post_returns_id_and_is_recorded(graph: FakeGraph, http: requests.Session) -> None:
    resp = http.post(f"{graph.base_url}/{PAGE}/feed", timeout=5,
                     data={"message": "hello", "link": "https://example.org",
                           "access_token": TOKEN})
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "application/json"
    assert json.loads(resp.headers["X-App-Usage"])["call_count"] == 0
    post_id = resp.json()["id"]
    assert post_id.startswith(f"{PAGE}_")
    [post] = graph.posts
    assert (post.id, post.message, post.link) == (post_id, "hello", "https://example.org")
    [req] = graph.received
    assert req.path == f"/v25.0/{PAGE}/feed"
    assert req.fields == {"message": "hello", "link": "https://example.org"}
    assert (req.token, req.token_in_url, req.status) == (TOKEN, False, 200)
    assert req.response == {"id": post_id}


def test_photo_post_with_json_body(graph: FakeGraph, http: requests.Session) -> None:
    resp = http.post(f"{graph.url}/v24.0/{PAGE}/photos", headers=AUTH, timeout=5,
                     json={"url": "https://example.org/a.jpg", "caption": "pic"})
    body = resp.json()
    [post] = graph.posts_for(PAGE)
    assert body == {"id": post.photo_id, "post_id": post.id}
    assert (post.image, post.message) == ("https://example.org/a.jpg", "pic")


@pytest.mark.parametrize("token", [None, "wrong"])
def test_bad_token_gets_code_190(graph: FakeGraph, http: requests.Session,
                                 token: str | None) -> None:
    data = {"message": "x"} if token is None else {"message": "x", "access_token": token}
    resp = http.post(f"{graph.base_url}/{PAGE}/feed", data=data, timeout=5)
    error = resp.json()["error"]
    assert resp.status_code == 400
    assert (error["code"], error["type"]) == (190, "OAuthException")
    assert error["fbtrace_id"] == resp.headers["x-fb-trace-id"]
    assert graph.posts == []


def test_queued_graph_error_then_normal(graph: FakeGraph, http: requests.Session) -> None:
    graph.fail_next(Fault.graph_error(80001, regain_minutes=3), page_id=PAGE)
    url = f"{graph.base_url}/{PAGE}/feed"
    first = http.post(url, headers=AUTH, data={"message": "a"}, timeout=5)
    second = http.post(url, headers=AUTH, data={"message": "a"}, timeout=5)
    assert first.status_code == 400
    assert first.json()["error"]["code"] == 80001
    assert first.json()["error"]["message"].startswith("(#80001) There have been too many")
    usage = json.loads(first.headers["X-Business-Use-Case-Usage"])
    assert usage[PAGE][0]["estimated_time_to_regain_access"] == 3
    assert second.status_code == 200
    assert len(graph.posts) == 1


def test_timeout_with_create_creates_the_post(graph: FakeGraph,
                                              http: requests.Session) -> None:
    graph.fail_next(Fault.timeout(5.0, create=True))
    with pytest.raises(requests.exceptions.ReadTimeout):
        http.post(f"{graph.base_url}/{PAGE}/feed", headers=AUTH, data={"message": "m"},
                  timeout=0.3)
    assert [p.message for p in graph.wait_for_posts(1, timeout=1)] == ["m"]


def test_published_posts_newest_first(graph: FakeGraph, http: requests.Session) -> None:
    for text in ("one", "two", "three"):
        http.post(f"{graph.base_url}/{PAGE}/feed", headers=AUTH, data={"message": text},
                  timeout=5)
    resp = http.get(f"{graph.base_url}/{PAGE}/published_posts", headers=AUTH, timeout=5,
                    params={"fields": "id,message,created_time", "limit": "2"})
    data = resp.json()["data"]
    assert [d["message"] for d in data] == ["three", "two"]
    assert data[0]["created_time"].endswith("+0000")


def test_token_in_query_string_is_flagged(graph: FakeGraph, http: requests.Session) -> None:
    resp = http.get(f"{graph.base_url}/me", params={"access_token": TOKEN}, timeout=5)
    assert resp.json() == {"id": PAGE, "name": f"Fake Page {PAGE}"}
    [req] = graph.received
    assert req.token_in_url and req.query == {}


def test_stop_is_prompt_with_a_sleeping_handler(http: requests.Session) -> None:
    fake = FakeGraph({PAGE: TOKEN}).start()
    fake.fail_next(Fault.timeout(30.0, create=False))
    with pytest.raises(requests.exceptions.ReadTimeout):
        http.post(f"{fake.base_url}/{PAGE}/feed", headers=AUTH, data={"message": "m"},
                  timeout=0.2)
    fake.stop()
    assert fake.posts == []


def test_debug_token_follows_the_wire_format(graph: FakeGraph, http: requests.Session) -> None:
    graph.set_app("42", "app-secret")
    graph.set_token_info(PAGE, expires_at=2_000_000_000, scopes=("pages_manage_posts",))

    def debug(input_token: str | None, token: str) -> requests.Response:
        params = {} if input_token is None else {"input_token": input_token}
        return http.get(f"{graph.base_url}/debug_token", params=params, timeout=5,
                        headers={"Authorization": f"Bearer {token}"})

    data = debug(TOKEN, "42|app-secret").json()["data"]
    assert data["is_valid"] is True and data["expires_at"] == 2_000_000_000
    assert data["scopes"] == ["pages_manage_posts"] and data["profile_id"] == PAGE
    assert data["type"] == "PAGE" and "app_id" in data and "issued_at" in data
    graph.set_token(PAGE, "rotated")
    stale = debug(TOKEN, "42|app-secret")
    assert stale.status_code == 200  # a bad input token is an answer, not an error
    assert stale.json()["data"]["is_valid"] is False and stale.json()["data"]["error"]["code"] == 190
    assert debug(None, "rotated").json()["error"]["code"] == 100
    assert debug("rotated", "wrong|secret").json()["error"]["code"] == 190
