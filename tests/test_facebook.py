"""The Facebook Page adapter against the fake Graph API: wire format, token handling, error mapping."""

from __future__ import annotations

import re
import traceback
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
import requests
from conftest import TOKEN, TOKEN2
from fakegraph import DEFAULT_MESSAGES, FakeGraph, Fault

from adapters import http as web
from adapters.base import AuthError, Message, PermanentError, Published, PublishError, TransientError
from adapters.facebook import FacebookPage, FacebookPageSettings
from scheduler import secrets

PAGE = "111"
Call = Callable[[FacebookPage], object]


@pytest.fixture(autouse=True)
def _no_graph_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The adapter reads these at construction; a developer's shell must not change the tests."""
    for name in ("FB_GRAPH_URL", "FB_GRAPH_VERSION", "OYEZ_HTTP_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with web.session() as session:
        yield session


def make_page(graph: FakeGraph, http: requests.Session, page_id: str = PAGE,
              token: str = TOKEN) -> FacebookPage:
    settings = FacebookPageSettings(page_id=page_id, access_token=token, graph_url=graph.url)
    return FacebookPage(settings, http)


@pytest.fixture
def page(graph: FakeGraph, http: requests.Session) -> FacebookPage:
    return make_page(graph, http)


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> None:
    """Register TOKEN as a secret for this test only (the registry is process-global)."""
    monkeypatch.setattr(secrets, "_secrets", set(secrets._secrets))
    secrets.register(TOKEN)


# -- publishing -----------------------------------------------------------------------------


def test_text_and_link_post_goes_to_feed(graph: FakeGraph, page: FacebookPage) -> None:
    published = page.publish(Message("Live chat on hate crime", link="https://example.org/chat"))

    [req] = graph.received
    assert (req.method, req.path, req.status) == ("POST", f"/v25.0/{PAGE}/feed", 200)
    assert req.fields == {"message": "Live chat on hate crime", "link": "https://example.org/chat"}
    [post] = graph.posts
    assert re.fullmatch(rf"{PAGE}_\d+", published.remote_id)
    assert published.remote_id == post.id
    assert published.url == f"https://www.facebook.com/{post.id}"


def test_text_only_post_sends_no_link_field(graph: FakeGraph, page: FacebookPage) -> None:
    page.publish(Message("Just text"))
    [req] = graph.received
    assert req.fields == {"message": "Just text"}


def test_image_post_goes_to_photos_and_returns_the_post_id(graph: FakeGraph, page: FacebookPage) -> None:
    published = page.publish(Message("Chat poster", image="https://example.org/img/chat.jpg"))

    [req] = graph.received
    assert (req.method, req.path) == ("POST", f"/v25.0/{PAGE}/photos")
    assert req.fields == {"url": "https://example.org/img/chat.jpg", "message": "Chat poster"}
    [post] = graph.posts
    assert (post.image, post.message) == ("https://example.org/img/chat.jpg", "Chat poster")
    assert published.remote_id == post.id  # the post's id, not the photo's
    assert published.remote_id != post.photo_id


CALLS = [
    pytest.param(lambda p: p.publish(Message("hi", link="https://example.org/")), id="publish-feed"),
    pytest.param(lambda p: p.publish(Message("hi", image="https://example.org/a.jpg")), id="publish-photo"),
    pytest.param(lambda p: p.find_published(Message("hi"), datetime.now(UTC)), id="find_published"),
    pytest.param(lambda p: p.check(), id="check"),
]


@pytest.mark.parametrize("call", CALLS)
def test_token_travels_only_as_bearer_header(graph: FakeGraph, page: FacebookPage,
                                             call: Call) -> None:
    call(page)

    [req] = graph.received
    assert req.token == TOKEN and req.token_in_header and not req.token_in_url and req.status == 200
    recorded = [req.path, *req.query.keys(), *req.query.values(), *req.fields.keys(), *req.fields.values()]
    assert not any(TOKEN in text or "access_token" in text for text in recorded)


@pytest.mark.parametrize(("env_version", "path_version"), [(None, "v25.0"), ("v24.0", "v24.0")])
def test_graph_version_comes_from_env(graph: FakeGraph, http: requests.Session,
                                      monkeypatch: pytest.MonkeyPatch,
                                      env_version: str | None, path_version: str) -> None:
    if env_version is not None:
        monkeypatch.setenv("FB_GRAPH_VERSION", env_version)
    make_page(graph, http).publish(Message("versioned"))
    [req] = graph.received
    assert req.path == f"/{path_version}/{PAGE}/feed"


def test_graph_url_falls_back_to_env(graph: FakeGraph, http: requests.Session,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FB_GRAPH_URL", graph.url)
    settings = FacebookPageSettings(page_id=PAGE, access_token=TOKEN)
    published = FacebookPage(settings, http).publish(Message("via env"))
    assert [p.id for p in graph.posts] == [published.remote_id]


# -- reading back ---------------------------------------------------------------------------


def test_find_published_matches_message_since_a_time(graph: FakeGraph, page: FacebookPage) -> None:
    since = datetime.now(UTC) - timedelta(minutes=1)
    page.publish(Message("older post"))
    wanted = page.publish(Message("the one we want", link="https://example.org/x"))
    page.publish(Message("newer post"))

    found = page.find_published(Message("the one we want", link="https://example.org/x"), since)

    assert found is not None
    assert found.remote_id == wanted.remote_id
    assert found.url == f"https://www.facebook.com/{wanted.remote_id}"
    get = graph.received[-1]
    assert (get.method, get.path) == ("GET", f"/v25.0/{PAGE}/published_posts")
    assert get.query["since"] == str(int(since.timestamp()))


def test_find_published_returns_none_for_unknown_message(graph: FakeGraph, page: FacebookPage) -> None:
    page.publish(Message("something else"))
    assert page.find_published(Message("never posted"), datetime.now(UTC) - timedelta(minutes=1)) is None


def test_find_published_ignores_posts_before_since(graph: FakeGraph, page: FacebookPage) -> None:
    page.publish(Message("old news"))
    assert page.find_published(Message("old news"), datetime.now(UTC) + timedelta(minutes=1)) is None


def test_find_published_only_looks_at_its_own_page(graph: FakeGraph, http: requests.Session) -> None:
    make_page(graph, http, "222", TOKEN2).publish(Message("on the other page"))
    since = datetime.now(UTC) - timedelta(minutes=1)
    assert make_page(graph, http).find_published(Message("on the other page"), since) is None


@pytest.mark.parametrize(("page_id", "token"), [(PAGE, TOKEN), ("222", TOKEN2)])
def test_check_returns_the_page_name(graph: FakeGraph, http: requests.Session, page_id: str,
                                     token: str) -> None:
    assert make_page(graph, http, page_id, token).check() == f"Fake Page {page_id}"
    [req] = graph.received
    assert (req.method, req.path) == ("GET", "/v25.0/me")


# -- errors ---------------------------------------------------------------------------------

RATE_LIMITS = [(4, 1), (17, 2), (32, 3), (341, 5), (613, 10), (80001, 60)]  # (code, regain minutes)
RATE_LIMIT_CODES = [code for code, _ in RATE_LIMITS]


@pytest.mark.parametrize("code", [1, 2])
def test_unknown_and_unavailable_are_transient_and_ambiguous(graph: FakeGraph, page: FacebookPage,
                                                             code: int) -> None:
    graph.fail_next(Fault.graph_error(code))
    with pytest.raises(TransientError) as info:
        page.publish(Message("maybe"))
    assert info.value.ambiguous  # Graph has created posts while answering 500/code 2
    assert (info.value.code, info.value.status) == (code, 500)


@pytest.mark.parametrize(("code", "minutes"), RATE_LIMITS)
def test_rate_limits_are_transient_with_regain_time(graph: FakeGraph, page: FacebookPage, code: int,
                                                    minutes: int) -> None:
    graph.fail_next(Fault.graph_error(code, regain_minutes=minutes))
    with pytest.raises(TransientError) as info:
        page.publish(Message("too fast"))
    assert info.value.retry_after == minutes * 60
    assert info.value.code == code
    assert not info.value.ambiguous  # a throttled call created nothing
    assert graph.posts == []


@pytest.mark.parametrize("code", RATE_LIMIT_CODES)
def test_rate_limit_without_regain_time_has_no_retry_after(graph: FakeGraph, page: FacebookPage,
                                                           code: int) -> None:
    graph.fail_next(Fault.graph_error(code))
    with pytest.raises(TransientError) as info:
        page.publish(Message("too fast"))
    assert info.value.retry_after is None


def test_retry_after_header_is_honoured(graph: FakeGraph, page: FacebookPage) -> None:
    graph.fail_next(Fault.retry_after(7))
    with pytest.raises(TransientError) as info:
        page.publish(Message("busy"))
    assert info.value.retry_after == 7
    assert info.value.status == 503


def test_http_500_that_created_the_post_is_ambiguous(graph: FakeGraph, page: FacebookPage) -> None:
    graph.fail_next(Fault.http_500(create=True))
    with pytest.raises(TransientError) as info:
        page.publish(Message("created anyway"))
    assert info.value.ambiguous
    assert [p.message for p in graph.posts] == ["created anyway"]


@pytest.mark.parametrize(
    ("code", "expected"),
    [(1, TransientError), (2, TransientError),
     *[(code, TransientError) for code in RATE_LIMIT_CODES],
     (100, PermanentError), (368, PermanentError), (506, PermanentError), (10, PermanentError),
     (200, PermanentError),
     (190, AuthError), (102, AuthError)],
)
def test_graph_error_maps_to_its_class_and_explains_itself(graph: FakeGraph, page: FacebookPage,
                                                           code: int, expected: type[PublishError]) -> None:
    fault = Fault.graph_error(code)
    graph.fail_next(fault)
    with pytest.raises(PublishError) as info:
        page.publish(Message("text"))

    assert type(info.value) is expected
    assert info.value.code == code
    assert info.value.status == fault.http_status
    message = str(info.value)
    assert f"page {PAGE}" in message
    assert DEFAULT_MESSAGES[code] in message
    assert TOKEN not in "".join(traceback.format_exception(info.value))


@pytest.mark.parametrize("token", ["EAAB-REVOKED-TOKEN", TOKEN2])  # unknown; page 222's token
@pytest.mark.parametrize("call", CALLS[:3])
def test_wrong_token_is_an_auth_error(graph: FakeGraph, http: requests.Session, call: Call,
                                      token: str) -> None:
    page = make_page(graph, http, PAGE, token)
    with pytest.raises(AuthError) as info:
        call(page)
    assert info.value.code == 190
    assert f"page {PAGE}" in str(info.value)
    assert token not in "".join(traceback.format_exception(info.value))
    assert graph.posts == []


def test_check_with_unknown_token_is_an_auth_error(graph: FakeGraph, http: requests.Session) -> None:
    with pytest.raises(AuthError) as info:
        make_page(graph, http, PAGE, "EAAB-REVOKED-TOKEN").check()
    assert info.value.code == 190
    assert "EAAB-REVOKED-TOKEN" not in str(info.value)


def test_check_rejects_a_token_for_another_page(graph: FakeGraph, http: requests.Session) -> None:
    page = make_page(graph, http, PAGE, TOKEN2)  # page 222's valid token, configured for page 111
    with pytest.raises(AuthError, match=f"page {PAGE}"):
        page.check()


def test_graph_message_echoing_the_token_is_redacted(graph: FakeGraph, page: FacebookPage,
                                                     registered: None) -> None:
    graph.fail_next(Fault.graph_error(100, message=f"(#100) Invalid parameter access_token={TOKEN}"))
    with pytest.raises(PermanentError) as info:
        page.publish(Message("text"))
    assert TOKEN not in str(info.value)
    assert f"access_token={secrets.MASK}" in str(info.value)


# -- usage headers --------------------------------------------------------------------------


@pytest.mark.parametrize("percent", [0, 42, 95])
def test_usage_headers_are_reported(graph: FakeGraph, page: FacebookPage, percent: int) -> None:
    graph.set_usage(PAGE, percent)
    assert page.publish(Message("busy page")).usage == percent


def test_usage_is_reported_by_find_published(graph: FakeGraph, page: FacebookPage) -> None:
    since = datetime.now(UTC) - timedelta(minutes=1)
    page.publish(Message("x"))
    graph.set_usage(PAGE, 88)
    found = page.find_published(Message("x"), since)
    assert isinstance(found, Published)
    assert found.usage == 88
