"""The Meta family end to end: the daemon as a subprocess against fakes of Facebook, Instagram
and Threads on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta

import pytest
from conftest import TOKEN, DaemonProcess, iso, soon, targets_yaml, wait_until
from fakegraph import FakeGraph, Fault
from fakemeta import FakeMeta, Kind

from scheduler.ledger import Delivery

IMG = "https://example.org/poster.jpg"
META_ENV = {"TOKEN_META": TOKEN, "OYEZ_CONTAINER_POLL_SECONDS": "0.1",
            "OYEZ_CONTAINER_WAIT_SECONDS": "60"}


def meta_targets(ig: FakeMeta | None = None, th: FakeMeta | None = None) -> str:
    """Target lines (without the `targets:` header) for an Instagram and a Threads account."""
    lines = []
    if ig is not None:
        lines += ["  ig:", "    adapter: instagram", '    ig_user_id: "17841"',
                  "    access_token: ${TOKEN_META}", f"    graph_url: {ig.url}"]
    if th is not None:
        lines += ["  th:", "    adapter: threads", '    user_id: "9001"',
                  "    access_token: ${TOKEN_META}", f"    graph_url: {th.url}"]
    return "\n".join(lines) + "\n"


@pytest.fixture
def meta_daemon(daemon: DaemonProcess) -> DaemonProcess:
    daemon.env.update(META_ENV)
    return daemon


@pytest.fixture
def ig() -> Iterator[FakeMeta]:
    with FakeMeta("instagram", {"17841": TOKEN}) as fake:
        yield fake
        assert fake.errors == []


@pytest.fixture
def th() -> Iterator[FakeMeta]:
    with FakeMeta("threads", {"9001": TOKEN}) as fake:
        yield fake
        assert fake.errors == []


def by_key(daemon: DaemonProcess) -> dict[str, Delivery]:
    return {d.key: d for d in daemon.deliveries()}


@pytest.mark.parametrize("kind", ["instagram", "threads"])
def test_sigkill_between_container_and_publish_publishes_that_container_once(
        kind: Kind, meta_daemon: DaemonProcess) -> None:
    with FakeMeta(kind, {"17841": TOKEN, "9001": TOKEN}) as fake:
        fake.hold = True  # the container stays IN_PROGRESS: the daemon is between the two steps
        targets = meta_targets(ig=fake) if kind == "instagram" else meta_targets(th=fake)
        name = "ig" if kind == "instagram" else "th"
        meta_daemon.write(f"targets:\n{targets}posts:\n  - id: p\n    at: {iso(soon(2))}\n"
                          f"    image: {IMG}\n    message: Exactly once\n")
        meta_daemon.start()

        def recorded() -> bool:
            rows = by_key(meta_daemon)
            row = rows.get(f"post:p:{name}")
            return row is not None and row.steps is not None and "container" in row.steps

        assert wait_until(recorded, 30), meta_daemon.log()
        meta_daemon.kill()
        [container] = fake.containers
        fake.hold = False
        meta_daemon.start()
        assert wait_until(lambda: by_key(meta_daemon)[f"post:p:{name}"].status == "sent", 30), \
            meta_daemon.log()
        assert meta_daemon.stop() == 0
        [post] = fake.published()
        row = by_key(meta_daemon)[f"post:p:{name}"]
        assert list(fake.containers) == [container] and fake.containers[container].media_id == post.id
        assert row.remote_id == post.id and row.permalink
        assert json.loads(row.steps or "")["container"] == container
        history = meta_daemon.cli("history").stdout
        assert row.permalink in history
        assert TOKEN not in meta_daemon.log() + history


def test_a_live_event_fans_out_as_a_thread_and_a_stopped_service_catches_up(
        graph: FakeGraph, ig: FakeMeta, th: FakeMeta, meta_daemon: DaemonProcess) -> None:
    head = targets_yaml(graph, "111") + meta_targets(ig, th)
    meta_daemon.write(head + "posts: []\n")
    th.port = int(th.url.rsplit(":", 1)[1])  # to come back where the daemon looks for it
    th.stop()  # Threads is down from the start
    meta_daemon.start(env={"OYEZ_MAX_ATTEMPTS": "100"})
    assert meta_daemon.wait_log("oyez running")
    starts = soon(15)  # timed from a running daemon, however long it took to start
    meta_daemon.write(
        head + "posts: []\nlive_events:\n"
        f"  - id: chat\n    title: Hate crime Q&A\n    starts: {iso(starts)}\n"
        f"    ends: {iso(starts + timedelta(seconds=6))}\n    thread: true\n    image: {IMG}\n"
        "    grace: 2m\n    targets: [page111, ig, th]\n"
        "    reminders:\n      - before: 10s\n        message: '{title} starts soon'\n"
        "    on_start: We're live\n    on_end: Thank you\n")
    stamp = starts.strftime("%Y-%m-%dT%H:%M:%SZ")

    def key(part: str, target: str) -> str:
        return f"live:chat:{part}:{stamp}:{target}"

    def sent(*keys: str) -> bool:
        rows = by_key(meta_daemon)
        return all(k in rows and rows[k].status == "sent" for k in keys)

    others = [key("reminder-10s", t) for t in ("page111", "ig")]
    assert wait_until(lambda: sent(*others), 40), meta_daemon.log()
    rows = by_key(meta_daemon)
    for k in others:  # on time although Threads is down
        assert (rows[k].lateness_ms or 0) < 3000, (k, rows[k].lateness_ms)
    threads = rows[key("reminder-10s", "th")]  # being retried (claimed ahead of its next try, or not)
    assert threads.status in ("retry", "sending") and "connection failed" in (threads.error or ""), \
        meta_daemon.log()
    th.start()  # back on its port: its reminder goes out late but within its window (the start)
    every = [key(p, t) for p in ("reminder-10s", "start", "end") for t in ("page111", "ig", "th")]
    assert wait_until(lambda: sent(*every), 60), meta_daemon.log()
    assert meta_daemon.stop() == 0
    rows = by_key(meta_daemon)

    [fb_post] = graph.posts_for("111")
    assert fb_post.message == "Hate crime Q&A starts soon"
    assert [c.message for c in graph.comments_on(fb_post.id)] == ["We're live", "Thank you"]
    assert [p.message for p in ig.published()] == ["Hate crime Q&A starts soon", "We're live", "Thank you"]
    assert all(p.image == IMG for p in ig.published())
    first, *replies = th.published()
    assert first.parent is None and [r.parent for r in replies] == [first.id, first.id]
    assert [r.message for r in replies] == ["We're live", "Thank you"]
    assert rows[key("start", "th")].parent == key("reminder-10s", "th")
    assert (rows[key("reminder-10s", "th")].lateness_ms or 0) > 0
    assert all(rows[k].remote_id and rows[k].permalink for k in every)
    for kind, fake in (("page111", graph), ("ig", ig), ("th", th)):
        assert all(r.token == TOKEN for r in fake.received), kind


def test_a_first_comment_waits_for_its_post_and_is_never_repeated(
        graph: FakeGraph, meta_daemon: DaemonProcess) -> None:
    graph.fail_next(Fault.graph_error(2, http_status=503), page_id="111")  # first attempt fails
    graph.fail_next(Fault.graph_error(100), page_id="222")  # this post fails for good
    due = iso(soon(2))
    meta_daemon.write(targets_yaml(graph, "111", "222") + "posts:\n"
                      f"  - id: p\n    at: {due}\n    targets: [page111]\n"
                      "    message: Appeal for witnesses\n    first_comment: 'Call 101, ref 42'\n"
                      f"  - id: bad\n    at: {due}\n    targets: [page222]\n    message: refused\n"
                      "    first_comment: nowhere to go\n")
    meta_daemon.start()
    comment, orphan = "post:p:page111:first-comment", "post:bad:page222:first-comment"
    assert wait_until(lambda: {by_key(meta_daemon).get(k, Delivery).status  # type: ignore[arg-type]
                               for k in (comment, orphan)} == {"sent", "failed"}, 30), meta_daemon.log()
    assert meta_daemon.stop() == 0
    meta_daemon.start()  # a restart sends nothing again
    assert wait_until(lambda: meta_daemon.log().count("oyez running") == 2, 20)
    assert meta_daemon.stop() == 0
    [post] = graph.posts_for("111")
    assert [c.message for c in graph.comments_on(post.id)] == ["Call 101, ref 42"]
    assert graph.posts_for("222") == [] and len(graph.posts) == 2
    rows = by_key(meta_daemon)
    assert rows["post:p:page111"].attempts == 2 and rows[comment].attempts == 1
    assert rows[comment].status == "sent" and rows[orphan].status == "failed"
    assert "post:bad:page222, which is failed" in (rows[orphan].error or "")
    assert rows["post:p:page111"].permalink == f"https://www.facebook.com/{post.id}"
    plan = meta_daemon.cli("plan", "-c", str(meta_daemon.jobs), "--from", iso(soon(-300))).stdout
    assert f"permalink: https://www.facebook.com/{post.id}" in plan


def test_check_asks_facebook_instagram_and_threads_who_the_token_belongs_to(
        graph: FakeGraph, ig: FakeMeta, th: FakeMeta, meta_daemon: DaemonProcess) -> None:
    th.set_token("9001", "ROTATED-THREADS-TOKEN")  # ours is now refused
    meta_daemon.write(targets_yaml(graph, "111") + meta_targets(ig, th) + "posts: []\n")
    result = meta_daemon.cli("check", "-c", str(meta_daemon.jobs), db=False, check=False)
    rows = {line.split()[0]: line.split(None, 2) for line in result.stdout.splitlines()[1:]}  # a table
    assert result.returncode == 1
    assert rows["page111"][1] == "ok" and rows["page111"][2].startswith("Fake Page 111")
    assert rows["ig"][1] == "ok" and rows["ig"][2].startswith("@fake_17841")
    assert rows["th"][1] == "invalid" and rows["th"][2].startswith("threads 9001: HTTP 400, Graph error 190")
    assert rows["th"][2].endswith("Fix: issue a new access token and update it in .env")
    assert TOKEN not in result.stdout + result.stderr
    assert [r.path for r in th.received] == ["/v1.0/me"] and [r.path for r in ig.received] == ["/v25.0/17841"]
