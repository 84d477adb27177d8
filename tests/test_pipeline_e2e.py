"""End to end: jobs.yaml → `oyez run` subprocess → fake Graph API → ledger."""

from __future__ import annotations

from conftest import TOKEN, DaemonProcess, iso, soon, targets_yaml, wait_until
from fakegraph import FakeGraph


def test_posts_and_live_event_arrive_once_on_time(graph: FakeGraph, daemon: DaemonProcess) -> None:
    base = soon(4)
    daemon.write(f"""
timezone: Europe/London
{targets_yaml(graph, "111")}
posts:
  - id: announce
    at: {iso(soon(0, base))}
    message: Police and partners host a Facebook live chat on hate crime
    link: https://example.org/news/chat
  - id: photo
    at: {iso(soon(0.5, base))}
    message: Chat poster
    image: https://example.org/img/chat.jpg
live_events:
  - id: chat
    title: Hate crime live chat
    starts: {iso(soon(2, base))}
    ends: {iso(soon(3, base))}
    reminders:
      - before: 1s
        message: "{{title}} starts in a second"
    on_start: "We're live now: {{title}}"
    on_end: "Thanks for joining {{title}}"
""")
    daemon.start()
    posts = graph.wait_for_posts(5, timeout=20)
    assert wait_until(lambda: sum(d.status == "sent" for d in daemon.deliveries()) == 5, 10)
    assert daemon.stop() == 0

    expected = {
        "Police and partners host a Facebook live chat on hate crime": soon(0, base),
        "Chat poster": soon(0.5, base),
        "Hate crime live chat starts in a second": soon(1, base),
        "We're live now: Hate crime live chat": soon(2, base),
        "Thanks for joining Hate crime live chat": soon(3, base),
    }
    assert sorted(p.message for p in posts) == sorted(expected)
    for post in posts:
        lateness = post.created_time - expected[post.message].timestamp()
        assert 0 <= lateness < 1.0, (post.message, lateness)
    [photo] = [p for p in posts if p.message == "Chat poster"]
    assert photo.image == "https://example.org/img/chat.jpg"
    [announce] = [p for p in posts if p.link]
    assert announce.link == "https://example.org/news/chat"

    rows = daemon.deliveries()
    assert {r.remote_id for r in rows} == {p.id for p in posts}
    assert all(r.status == "sent" and r.attempts == 1 and r.lateness_ms is not None for r in rows)
    assert {r.part for r in rows} == {"post", "reminder-1s", "start", "end"}
    # the token went in a header, never in a URL, and nothing printed it
    assert all(not r.token_in_url and r.token == TOKEN for r in graph.received)
    assert TOKEN not in daemon.log() + daemon.out()
    assert TOKEN.encode() not in daemon.db_path.read_bytes()


def test_dry_run_prints_and_never_touches_the_network(graph: FakeGraph, daemon: DaemonProcess) -> None:
    due = soon(2)
    jobs = f"""
{targets_yaml(graph, "111")}
posts:
  - id: tip
    at: {iso(due)}
    message: "Lock your car"
    link: https://example.org/tips
  - id: later
    at: {iso(soon(3600))}
    message: "Later on"
"""
    daemon.write(jobs)
    daemon.start("--dry-run")
    assert wait_until(lambda: "Lock your car" in daemon.out(), 15)
    assert daemon.stop() == 0
    assert graph.received == []
    out = daemon.out()
    assert "DRY RUN" in out and "-> page111" in out and "link:  https://example.org/tips" in out
    [dry] = [d for d in daemon.deliveries(dry_run=True) if d.job_id == "tip"]
    assert dry.status == "sent" and dry.remote_id and dry.remote_id.startswith("dry-run")
    assert daemon.deliveries(dry_run=False) == []
    log = daemon.log()  # a short plan first, then words that do not read as if it posted
    assert "coming up (the next " in log  # the tip too, unless the daemon started after its time
    assert "later -> page111: 'Later on'" in log
    assert "would post post:tip:page111 to page111 now (dry run: nothing was sent;" in log
    assert "sent post:tip" not in log
    assert "sent (dry run)" in daemon.cli("history").stdout
    assert "dry-run deliveries (printed, not posted): 1 pending, 1 sent" in daemon.cli("status",
                                                                                       check=False).stdout

    # a later real run is not fooled by the dry run: the post (still within grace) goes out once
    daemon.start()
    [post] = graph.wait_for_posts(1, timeout=15)
    assert post.message == "Lock your car"
    assert wait_until(lambda: {d.job_id: d.status for d in daemon.deliveries()}
                      == {"tip": "sent", "later": "pending"}, 10)
    assert daemon.stop() == 0
    assert len(graph.posts) == 1
