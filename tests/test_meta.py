"""The Meta family's adapters against fakes of their services: Facebook albums and comments,
Instagram and Threads containers, the shared error model, reconciliation and validate checks."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import requests
from conftest import TOKEN, TOKEN2
from fakegraph import FakeGraph, Fault
from fakemeta import FakeMeta

from adapters import http as web
from adapters.base import AuthError, Message, PermanentError, Steps, TransientError
from adapters.facebook import FacebookPage, FacebookPageSettings
from adapters.instagram import Instagram, InstagramSettings
from adapters.threads import Threads, ThreadsSettings, threads_length
from scheduler import config
from scheduler.errors import ConfigError

IMG = "https://example.org/a.jpg"


@pytest.fixture(autouse=True)
def _fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FB_GRAPH_URL", "IG_GRAPH_URL", "THREADS_GRAPH_URL", "OYEZ_HTTP_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OYEZ_CONTAINER_POLL_SECONDS", "0.02")
    monkeypatch.setenv("OYEZ_CONTAINER_WAIT_SECONDS", "1")


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with web.session() as session:
        yield session


@pytest.fixture
def ig_fake() -> Iterator[FakeMeta]:
    with FakeMeta("instagram", {"17841": TOKEN, "17842": TOKEN2}) as fake:
        yield fake
        assert fake.errors == []


@pytest.fixture
def th_fake() -> Iterator[FakeMeta]:
    with FakeMeta("threads", {"9001": TOKEN, "9002": TOKEN2}) as fake:
        yield fake
        assert fake.errors == []


@pytest.fixture
def ig(ig_fake: FakeMeta, http: requests.Session) -> Instagram:
    return Instagram(InstagramSettings(ig_user_id="17841", access_token=TOKEN, graph_url=ig_fake.url), http)


@pytest.fixture
def th(th_fake: FakeMeta, http: requests.Session) -> Threads:
    return Threads(ThreadsSettings(user_id="9001", access_token=TOKEN, graph_url=th_fake.url), http)


@pytest.fixture
def page(graph: FakeGraph, http: requests.Session) -> FacebookPage:
    return FacebookPage(FacebookPageSettings(page_id="111", access_token=TOKEN, graph_url=graph.url), http)


def calls(fake: FakeGraph) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in fake.received]


# -- Facebook: albums, comments, permalinks ---------------------------------------------------


def test_an_album_uploads_each_photo_unpublished_then_makes_one_post(
        graph: FakeGraph, page: FacebookPage) -> None:
    images = ("https://e.org/1.jpg", "https://e.org/2.jpg", "https://e.org/3.jpg")
    published = page.publish(Message("Three photos", images=images))

    uploads = [r for r in graph.received if r.path.endswith("/photos")]
    assert [(r.fields["url"], r.fields["published"]) for r in uploads] == [(i, "false") for i in images]
    [feed] = [r for r in graph.received if r.path.endswith("/feed")]
    assert feed.query["fields"] == "id,permalink_url"
    media = [json.loads(feed.fields[f"attached_media[{i}]"])["media_fbid"] for i in range(3)]
    [post] = graph.posts
    assert post.attached == tuple(media) and post.message == "Three photos"
    assert published.url == f"https://www.facebook.com/{post.id}"  # as the create call answered


def test_an_album_retried_after_a_failure_half_way_uploads_nothing_twice(
        graph: FakeGraph, page: FacebookPage) -> None:
    images = ("https://e.org/1.jpg", "https://e.org/2.jpg")
    steps = Steps()
    graph.fail_next(Fault.none(), Fault.graph_error(2))  # photo 1 ok, photo 2 fails
    with pytest.raises(TransientError):
        page.publish(Message("Two", images=images, steps=steps))
    assert graph.posts == [] and list(steps.saved) == ["photo-0"]  # nothing visible yet
    graph.fail_next(Fault.none(), Fault.http_500())  # photo 2 ok, the feed post fails
    with pytest.raises(TransientError):
        page.publish(Message("Two", images=images, steps=steps))
    page.publish(Message("Two", images=images, steps=steps))
    uploads = [r for r in graph.received if r.path.endswith("/photos") and r.status == 200]
    assert len(uploads) == 2 and len(graph.posts) == 1
    assert graph.posts[0].attached == (steps.saved["photo-0"], steps.saved["photo-1"])


def test_a_reply_is_a_comment_under_the_post_and_is_found_again_there(
        graph: FakeGraph, page: FacebookPage) -> None:
    parent = page.publish(Message("Live chat at 7"))
    since = datetime.now(UTC) - timedelta(minutes=1)
    comment = page.publish(Message("Link: https://e.org", reply_to=parent.remote_id))

    assert calls(graph)[-1] == ("POST", f"/v25.0/{parent.remote_id}/comments")
    [made] = graph.comments_on(parent.remote_id)
    assert (made.id, made.message) == (comment.remote_id, "Link: https://e.org")
    assert comment.url and "comment_id=" in comment.url
    found = page.find_published(Message("Link: https://e.org", reply_to=parent.remote_id), since)
    assert found is not None and found.remote_id == comment.remote_id
    assert page.find_published(Message("Link: https://e.org", reply_to=parent.remote_id), since,
                               {comment.remote_id}) is None
    assert [p.id for p in graph.posts_for("111")] == [parent.remote_id]  # a comment is no post


# -- Instagram --------------------------------------------------------------------------------


def test_instagram_container_then_publish_with_permalink(ig_fake: FakeMeta, ig: Instagram) -> None:
    ig_fake.ready_after = 2  # two status reads say IN_PROGRESS
    steps = Steps()
    published = ig.publish(Message("Caption #police", image=IMG, steps=steps))

    assert calls(ig_fake) == [
        ("GET", "/v25.0/17841/content_publishing_limit"), ("POST", "/v25.0/17841/media"),
        ("GET", f"/v25.0/{steps.saved['container']}"), ("GET", f"/v25.0/{steps.saved['container']}"),
        ("GET", f"/v25.0/{steps.saved['container']}"), ("POST", "/v25.0/17841/media_publish"),
        ("GET", f"/v25.0/{published.remote_id}")]
    create, status = ig_fake.received[1], ig_fake.received[2]
    assert create.fields == {"image_url": IMG, "caption": "Caption #police"}
    assert status.query["fields"] == "status_code,status"  # Instagram's names (status: prose)
    assert ig_fake.received[5].fields == {"creation_id": steps.saved["container"]}
    [post] = ig_fake.published()
    assert (post.id, post.message) == (published.remote_id, "Caption #police")
    assert published.url is not None and published.url.startswith("https://www.instagram.com/p/")
    assert all(r.token == TOKEN and not r.token_in_url for r in ig_fake.received)


def test_instagram_carousel_children_are_made_once(ig_fake: FakeMeta, ig: Instagram) -> None:
    images = ("https://e.org/1.jpg", "https://e.org/2.jpg", "https://e.org/3.jpg")
    steps = Steps()
    ig_fake.fail_next(Fault.none(), Fault.none(), Fault.graph_error(-1, 2207001, message="server error"))
    with pytest.raises(TransientError):
        ig.publish(Message("Album", images=images, steps=steps))
    ig.publish(Message("Album", images=images, steps=steps))
    creates = [r for r in ig_fake.received if r.path.endswith("/media") and r.status == 200]
    assert [r.fields.get("is_carousel_item") for r in creates] == ["true", "true", "true", None]
    assert creates[-1].fields["media_type"] == "CAROUSEL"
    assert creates[-1].fields["children"] == ",".join(steps.saved[f"child-{i}"] for i in range(3))
    [post] = ig_fake.published()
    assert post.image == ",".join(images)


def test_instagram_container_error_is_permanent_with_the_reason(ig_fake: FakeMeta, ig: Instagram) -> None:
    ig_fake.fail_containers("aspect ratio not supported")
    with pytest.raises(PermanentError, match="aspect ratio not supported"):
        ig.publish(Message("x", image=IMG))
    assert ig_fake.published() == []


def test_a_container_not_ready_in_time_is_resumed_not_made_again(ig_fake: FakeMeta, ig: Instagram) -> None:
    ig_fake.hold = True
    steps = Steps()
    with pytest.raises(TransientError, match="not ready") as raised:
        ig.publish(Message("Slow", image=IMG, steps=steps))
    assert not raised.value.ambiguous and ig_fake.published() == []
    ig_fake.hold = False
    ig.publish(Message("Slow", image=IMG, steps=steps))
    assert len(ig_fake.containers) == 1 and len(ig_fake.published()) == 1


@pytest.mark.parametrize(("fault", "error", "ambiguous", "retry_after"), [
    (Fault.graph_error(190, 463), AuthError, False, None),
    (Fault.graph_error(100, message="(#100) Invalid parameter"), PermanentError, False, None),
    (Fault.graph_error(36000, 2207004, message="image too large"), PermanentError, False, None),
    (Fault.graph_error(2), TransientError, True, None),
    (Fault.graph_error(-2, 2207003, message="timeout downloading media"), TransientError, False, None),
    (Fault.graph_error(4, regain_minutes=7), TransientError, False, 420.0),
    (Fault.graph_error(9, 2207042, message="reached max posts"), TransientError, False, 3600.0),
    (Fault.graph_error(4, 2207051, message="activity restricted"), PermanentError, False, None),
    (Fault.graph_error(9007, 2207027, message="media not ready"), TransientError, False, None),
], ids=["auth", "invalid", "too-large", "unavailable", "download", "rate-limit", "quota",
        "restricted", "not-ready"])
def test_instagram_errors_by_class(ig_fake: FakeMeta, ig: Instagram, fault: Fault,
                                   error: type[Exception], ambiguous: bool,
                                   retry_after: float | None) -> None:
    ig_fake.fail_next(Fault.none(), fault)  # the container is made; publishing fails
    with pytest.raises(error) as raised:
        ig.publish(Message("x", image=IMG))
    assert getattr(raised.value, "ambiguous", False) == ambiguous
    assert getattr(raised.value, "retry_after", None) == retry_after
    assert TOKEN not in str(raised.value)


def test_the_publishing_quota_is_read_before_a_burst_and_respected(ig_fake: FakeMeta,
                                                                   ig: Instagram) -> None:
    ig_fake.quota_used = 48
    ig.publish(Message("one", image=IMG))
    ig.publish(Message("two", image=IMG))
    with pytest.raises(TransientError, match="quota used up") as raised:
        ig.publish(Message("three", image=IMG))
    assert raised.value.retry_after and len(ig_fake.published()) == 2
    reads = [r for r in ig_fake.received if r.path.endswith("content_publishing_limit")]
    assert len(reads) == 1  # read once before the burst, then counted


def test_an_ambiguous_publish_is_found_and_never_published_twice(ig_fake: FakeMeta, ig: Instagram) -> None:
    since = datetime.now(UTC) - timedelta(minutes=1)
    steps = Steps()
    ig_fake.fail_next(Fault.none(), Fault.http_500(create=True))  # published, answer lost
    with pytest.raises(TransientError) as raised:
        ig.publish(Message("Once", image=IMG, steps=steps))
    assert raised.value.ambiguous
    with pytest.raises(TransientError, match="already published"):  # the container says so
        ig.publish(Message("Once", image=IMG, steps=steps))
    found = ig.find_published(Message("Once", image=IMG), since)
    [post] = ig_fake.published()
    assert found is not None and found.remote_id == post.id and found.url
    assert ig.find_published(Message("Once", image=IMG), since, {post.id}) is None


def test_instagram_check_names_the_account(ig_fake: FakeMeta, ig: Instagram,
                                           http: requests.Session) -> None:
    assert ig.check() == "@fake_17841"
    other = Instagram(InstagramSettings(ig_user_id="17841", access_token="WRONG", graph_url=ig_fake.url),
                      http)
    with pytest.raises(AuthError):
        other.check()


# -- Threads ----------------------------------------------------------------------------------


def test_threads_text_post_and_reply(th_fake: FakeMeta, th: Threads) -> None:
    first = th.publish(Message("We're live"))
    reply = th.publish(Message("Questions below", reply_to=first.remote_id))

    creates = [r for r in th_fake.received if r.method == "POST" and r.path.endswith("/threads")]
    assert [r.path for r in creates] == ["/v1.0/9001/threads"] * 2
    assert creates[0].fields == {"media_type": "TEXT", "text": "We're live"}
    assert creates[1].fields["reply_to_id"] == first.remote_id
    reads = {r.path: r.query["fields"] for r in th_fake.received if r.method == "GET"}
    assert set(reads.values()) == {"quota_usage,config", "status,error_message", "permalink"}
    assert reads["/v1.0/9001/threads_publishing_limit"] == "quota_usage,config"  # before the post
    publishes = [r.path for r in th_fake.received if r.path.endswith("threads_publish")]
    assert publishes == ["/v1.0/9001/threads_publish"] * 2
    posts = th_fake.published()
    assert [p.parent for p in posts] == [None, first.remote_id]
    assert reply.url is not None and reply.url.startswith("https://www.threads.net/")


def test_threads_image_post(th_fake: FakeMeta, th: Threads) -> None:
    th.publish(Message("Photo", image=IMG))
    create = next(r for r in th_fake.received if r.path.endswith("/threads"))
    assert create.fields == {"media_type": "IMAGE", "image_url": IMG, "text": "Photo"}


def test_threads_container_error_carries_its_error_message(th_fake: FakeMeta, th: Threads) -> None:
    th_fake.fail_containers("INVALID_ASPEC_RATIO")
    with pytest.raises(PermanentError, match="INVALID_ASPEC_RATIO"):
        th.publish(Message("x", image=IMG))


def test_threads_reconciles_through_recent_threads_and_replies(th_fake: FakeMeta, th: Threads) -> None:
    since = datetime.now(UTC) - timedelta(minutes=1)
    first = th.publish(Message("Post"))
    reply = th.publish(Message("Reply", reply_to=first.remote_id))
    found = th.find_published(Message("Post"), since)
    assert found is not None and found.remote_id == first.remote_id
    found = th.find_published(Message("Reply", reply_to=first.remote_id), since)
    assert found is not None and found.remote_id == reply.remote_id
    assert th.find_published(Message("Reply"), since) is None  # not among the posts
    assert th.check() == "@fake_9001"


@pytest.mark.parametrize(("fault", "error"), [
    (Fault.graph_error(190, message="Error validating access token"), AuthError),
    (Fault.graph_error(100, message="THREADS_API__LINK_LIMIT_EXCEEDED"), PermanentError),
    (Fault.graph_error(1, 4279013, message="user restricted"), PermanentError),
    (Fault.http_500(), TransientError),
    (Fault.retry_after(30), TransientError),
], ids=["auth", "links", "restricted", "server", "retry-after"])
def test_threads_errors_by_class(th_fake: FakeMeta, th: Threads, fault: Fault,
                                 error: type[Exception]) -> None:
    th_fake.fail_next(fault)  # the container call fails: nothing is created
    with pytest.raises(error) as raised:
        th.publish(Message("x"))
    assert th_fake.containers == {} and th_fake.published() == []
    if fault.kind == "retry_after":
        assert getattr(raised.value, "retry_after", None) == 30


@pytest.mark.parametrize(("text", "length"), [
    ("a" * 500, 500), ("é" * 10, 10), ("👍", 4), ("👍🏽", 8), ("❤️", 6), ("ok ✅", 6),
])
def test_threads_counts_an_emoji_as_its_utf8_bytes(text: str, length: int) -> None:
    assert threads_length(text) == length


# -- validate ---------------------------------------------------------------------------------


HEAD = """targets:
  page:
    adapter: facebook_page
    page_id: "111"
    access_token: ${T}
  ig:
    adapter: instagram
    ig_user_id: "17841"
    access_token: ${T}
  th:
    adapter: threads
    user_id: "9001"
    access_token: ${T}
posts:
"""
ENV = {"T": "EAAB-META-TEST-TOKEN"}  # secrets are always ${VAR}s


def problems(body: str) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        config.parse((HEAD + body).encode(), env=ENV)
    return raised.value.problems


def test_a_message_too_long_for_threads_is_located_and_says_how_to_fix_it() -> None:
    body = (f"  - id: long\n    at: 2030-01-01T10:00:00Z\n    targets: [page, th]\n"
            f"    message: {'x' * 499}👍\n")
    [problem] = problems(body)
    assert problem.startswith("jobs.yaml:18: target th: 503 characters")
    assert "message_for: {th: ...}" in problem
    fixed = body + "    message_for:\n      th: short version\n"
    cfg = config.parse((HEAD + fixed).encode(), env=ENV)
    from scheduler.plan import expand
    occ = expand(cfg, datetime(2029, 1, 1, tzinfo=UTC), datetime(2031, 1, 1, tzinfo=UTC))
    assert {o.target: o.text for o in occ}["th"] == "short version"
    assert {o.target: o.text for o in occ}["page"] == "x" * 499 + "👍"


def test_instagram_needs_an_image_and_a_caption_within_its_limits() -> None:
    tags = " ".join(f"#t{i}" for i in range(31))
    got = problems(f"  - id: a\n    at: 2030-01-01T10:00:00Z\n    targets: [ig]\n    message: hi\n"
                   f"  - id: b\n    at: 2030-01-01T10:00:00Z\n    targets: [ig]\n    image: {IMG}\n"
                   f"    message: '{tags}'\n")
    assert got[0] == "jobs.yaml:15: target ig: an Instagram post needs an image (image: or images:)"
    assert got[1].startswith("jobs.yaml:23: target ig: 31 hashtags, over Instagram's 30")


def test_message_for_an_unknown_target_and_a_first_comment_on_instagram_are_errors() -> None:
    got = problems(f"  - id: a\n    at: 2030-01-01T10:00:00Z\n    targets: [page, ig]\n    image: {IMG}\n"
                   "    message: hi\n    first_comment: see link\n    message_for:\n      th: other\n")
    assert any(p.startswith("jobs.yaml:20: first_comment") or "takes no first comment" in p for p in got)
    assert any(p.startswith("jobs.yaml:22: message_for: 'th' is not one of") for p in got)


def test_first_comment_and_live_thread_are_planned_under_their_parent() -> None:
    body = ("  - id: a\n    at: 2030-01-01T10:00:00Z\n    targets: [page]\n    message: hi\n"
            "    first_comment: the link\nlive_events:\n  - id: chat\n    title: Chat\n"
            "    starts: 2030-01-02T19:00:00Z\n    ends: 2030-01-02T20:00:00Z\n    thread: true\n"
            f"    image: {IMG}\n    targets: [page, ig, th]\n    reminders:\n      - before: 1h\n"
            "        message: soon\n    on_start: live now\n")
    cfg = config.parse((HEAD + body).encode(), env=ENV)
    from scheduler.plan import expand
    occ = {o.key: o for o in expand(cfg, datetime(2029, 1, 1, tzinfo=UTC), datetime(2031, 1, 1, tzinfo=UTC))}
    assert occ["post:a:page:first-comment"].parent == "post:a:page"
    assert occ["post:a:page:first-comment"].text == "the link"
    start = "live:chat:start:2030-01-02T19:00:00Z"
    assert occ[f"{start}:page"].parent == "live:chat:reminder-1h:2030-01-02T19:00:00Z:page"
    assert occ[f"{start}:th"].parent == "live:chat:reminder-1h:2030-01-02T19:00:00Z:th"
    assert occ[f"{start}:ig"].parent is None  # Instagram takes no replies: its own posts
    assert occ[f"{start}:ig"].image == IMG


def test_a_live_event_message_too_long_for_threads_is_located_at_its_line() -> None:
    got = problems("  []\nlive_events:\n  - id: chat\n    title: Chat\n    starts: 2030-01-02T19:00:00Z\n"
                   "    ends: 2030-01-02T20:00:00Z\n    targets: [page, th]\n    reminders:\n"
                   f"      - before: 1h\n        message: '{{title}} {'y' * 500}'\n")
    assert [p.split(": ")[:2] for p in got] == [["jobs.yaml:24", "target th"]]
