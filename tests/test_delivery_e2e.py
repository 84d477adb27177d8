"""Delivery guarantees, end to end: the real daemon against the fake Graph API.

Crashes, restarts, network faults, bad tokens, rate limits and downtime:
every post goes out once, on time or knowingly late, and the ledger says so.
"""

from __future__ import annotations

import json
import random
import time
from datetime import timedelta

from conftest import TOKEN2, DaemonProcess, iso, occurrence, posts_yaml, soon, targets_yaml, wait_until
from fakegraph import FakeGraph, Fault

from scheduler.ledger import Ledger


def messages(graph: FakeGraph, page: str | None = None) -> list[str]:
    return [p.message for p in (graph.posts_for(page) if page else graph.posts)]


def statuses(daemon: DaemonProcess) -> dict[str, str]:
    return {d.job_id: d.status for d in daemon.deliveries()}


def test_sigkill_mid_way_then_restart_sends_every_post_exactly_once(graph: FakeGraph,
                                                                     daemon: DaemonProcess) -> None:
    seed = random.randrange(1_000_000)
    rng = random.Random(seed)
    start = soon(3)
    daemon.write(targets_yaml(graph, "111") + posts_yaml(20, start, 0.5))
    graph.fail_randomly(0.3, [Fault.timeout(0.4, create=True)])  # widen the in-flight window
    daemon.start()
    time.sleep((start - soon(0)).total_seconds() + rng.uniform(0.5, 9.5))
    daemon.kill()
    sent_before = len(graph.posts)
    daemon.start()
    assert wait_until(lambda: len(statuses(daemon)) == 20 and set(statuses(daemon).values()) == {"sent"},
                      40), (seed, statuses(daemon))
    assert daemon.stop() == 0
    got = messages(graph)
    assert sorted(got) == sorted(f"p post number {i}" for i in range(20)), seed
    assert len(got) == len(set(got)), f"duplicate posts (seed {seed})"
    assert sent_before > 0, seed


def test_flaky_network_every_post_once_and_every_attempt_recorded(graph: FakeGraph,
                                                                   daemon: DaemonProcess) -> None:
    graph.fail_randomly(0.3, [Fault.http_500(create=False), Fault.http_500(create=True),
                              Fault.timeout(3, create=True), Fault.timeout(3, create=False),
                              Fault.graph_error(4), Fault.graph_error(613)])
    daemon.write(targets_yaml(graph, "111") + posts_yaml(20, soon(3), 0.25))
    daemon.start(env={"OYEZ_MAX_ATTEMPTS": "12"})
    assert wait_until(lambda: list(statuses(daemon).values()).count("sent") == 20, 90), statuses(daemon)
    assert daemon.stop() == 0
    got = messages(graph)
    assert sorted(got) == sorted(f"p post number {i}" for i in range(20))
    posts_made = [r for r in graph.received if r.method == "POST"]
    ledger = Ledger(daemon.db)
    attempts = [a for d in ledger.deliveries(dry_run=False) for a in ledger.attempts(d.id or 0)]
    ledger.engine.dispose()
    # one POST per attempt, except attempts that found the post already on the page
    assert len(posts_made) == sum(a.outcome != "found" for a in attempts)
    assert sum(a.outcome == "transient" for a in attempts) >= 1
    assert {a.outcome for a in attempts} <= {"sent", "found", "transient"}
    assert len(posts_made) > 20  # faults did happen


def test_bad_token_holds_that_target_only_until_fixed(graph: FakeGraph, daemon: DaemonProcess) -> None:
    graph.set_token("222", "EAAB-ROTATED-TOKEN")  # the token in .env is now invalid
    daemon.write(targets_yaml(graph, "111", "222")
                 + posts_yaml(4, soon(3), 0.5, targets=("page111", "page222")))
    daemon.start()
    assert wait_until(lambda: len(messages(graph, "111")) == 4, 20)
    time.sleep(2.5)  # more sweeps: held deliveries must not be retried
    to_222 = [r for r in graph.received if "/222/" in r.path]
    assert len(to_222) == 1 and to_222[0].status == 400
    rows = {(d.job_id, d.target): d for d in daemon.deliveries()}
    assert all(rows[(f"p{i}", "page222")].status == "pending" for i in range(4))
    assert daemon.log().count("target page222 is unhealthy") == 1
    history = daemon.cli("history").stdout
    assert history.count("pending (target unhealthy)") == 4 and history.count(" sent ") == 4
    plan = json.loads(daemon.cli("plan", "-c", str(daemon.jobs), "--json",
                                 "--from", iso(soon(-60))).stdout)
    assert sorted({(r["target"], r["status"]) for r in plan}) == [
        ("page111", "sent"), ("page222", "pending (target unhealthy)")]
    assert daemon.stop() == 0

    # the same bad token after a restart: still held, still no requests
    daemon.start()
    time.sleep(2.5)
    assert len([r for r in graph.received if "/222/" in r.path]) == 1
    assert daemon.stop() == 0

    # the token is fixed in the environment: the held posts (still within grace) go out once
    daemon.start(env={"TOKEN_222": "EAAB-ROTATED-TOKEN"})
    assert wait_until(lambda: len(messages(graph, "222")) == 4, 20)
    assert daemon.stop() == 0
    assert sorted(messages(graph, "222")) == sorted(f"p post number {i}" for i in range(4))
    assert set(statuses(daemon).values()) == {"sent"}
    assert TOKEN2 not in daemon.log()


def test_started_late_sends_within_grace_and_misses_beyond(graph: FakeGraph, daemon: DaemonProcess) -> None:
    now = soon(0)
    ago = now - timedelta(minutes=20)  # the daemon was down from before this until now
    daemon.write(f"""
{targets_yaml(graph, "111")}
posts:
  - id: patient
    at: {iso(ago)}
    grace: 30m
    message: sent late but within grace
  - id: impatient
    at: {iso(ago)}
    message: too late with the default 15m grace
live_events:
  - id: chat
    title: Live chat
    starts: {iso(now - timedelta(minutes=1))}
    ends: {iso(now + timedelta(hours=1))}
    reminders:
      - before: 15m
        message: "{{title}} in 15 minutes"
    on_start: "We're live: {{title}}"
""")
    daemon.start()
    assert wait_until(lambda: len(graph.posts) == 2 and "missed" in statuses(daemon).values(), 20)
    time.sleep(1.5)
    assert daemon.stop() == 0
    assert sorted(messages(graph)) == ["We're live: Live chat", "sent late but within grace"]
    rows = {(d.job_id, d.part): d for d in daemon.deliveries()}
    late = rows[("patient", "post")]
    assert late.status == "sent" and late.lateness_ms is not None
    assert 20 * 60_000 <= late.lateness_ms < 21 * 60_000
    missed = rows[("impatient", "post")]
    assert missed.status == "missed" and missed.error and "late" in missed.error
    assert rows[("chat", "reminder-15m")].status == "missed"  # a stale reminder is never sent
    history = daemon.cli("history").stdout
    assert "missed" in history and "sent" in history
    assert "missed post:impatient:page111" in daemon.log()


def test_permanent_error_fails_at_once_and_others_continue(graph: FakeGraph, daemon: DaemonProcess) -> None:
    graph.fail_next(Fault.graph_error(506), page_id="111")
    daemon.write(targets_yaml(graph, "111") + posts_yaml(3, soon(3), 0.5))
    daemon.start()
    assert wait_until(lambda: sorted(statuses(daemon).values()) == ["failed", "sent", "sent"], 20)
    time.sleep(1.5)
    assert daemon.stop() == 0
    [failed] = [d for d in daemon.deliveries() if d.status == "failed"]
    assert failed.attempts == 1 and failed.error and "Duplicate status message" in failed.error
    assert len([r for r in graph.received if r.method == "POST"]) == 3
    assert "failed" in daemon.cli("history").stdout


def test_two_daemons_sharing_a_database_never_double_post(graph: FakeGraph, daemon: DaemonProcess) -> None:
    daemon.write(targets_yaml(graph, "111", "222")
                 + posts_yaml(15, soon(3), 0.2, targets=("page111", "page222")))
    first = daemon.start().proc
    second = daemon.start().proc
    assert first is not None and second is not None
    assert wait_until(lambda: len(graph.posts) >= 30 and set(statuses(daemon).values()) == {"sent"}, 30)
    time.sleep(1.5)
    for proc in (first, second):
        proc.terminate()
        assert proc.wait(20) == 0, daemon.log()[-4000:]
    assert len(graph.posts) == 30
    assert len({(p.page_id, p.message) for p in graph.posts}) == 30


def test_slow_target_does_not_delay_others(graph: FakeGraph, daemon: DaemonProcess) -> None:
    graph.fail_next(*[Fault.timeout(1.5, create=True)] * 5, page_id="111")
    start = soon(3)
    daemon.write(targets_yaml(graph, "111", "222")
                 + posts_yaml(5, start, 0.1, targets=("page111", "page222")))
    daemon.start()
    assert wait_until(lambda: len(graph.posts) == 10, 30)
    assert daemon.stop() == 0
    fast = [p for p in graph.posts if p.page_id == "222"]
    for post in fast:
        due = start + timedelta(seconds=0.1 * int(post.message.rsplit(" ", 1)[1]))
        assert post.created_time - due.timestamp() < 0.5
    slow = sorted(graph.posts_for("111"), key=lambda p: p.created_time)
    assert [p.message for p in slow] == [f"p post number {i}" for i in range(5)]  # order kept


def test_rate_limit_usage_slows_that_target(graph: FakeGraph, daemon: DaemonProcess) -> None:
    graph.set_usage("111", 95)
    daemon.write(targets_yaml(graph, "111", "222")
                 + posts_yaml(2, soon(3), 0.5, targets=("page111", "page222")))
    daemon.start()
    assert wait_until(lambda: len(graph.posts) == 4, 30)
    assert daemon.stop() == 0
    p111 = sorted(p.created_time for p in graph.posts_for("111"))
    p222 = sorted(p.created_time for p in graph.posts_for("222"))
    assert p111[1] - p111[0] >= 4.5  # paced after a 95% usage report
    assert p222[1] - p222[0] < 1.5
    assert "rate-limit usage at 95%" in daemon.log()


def test_sweep_sends_what_the_scheduler_does_not_know(graph: FakeGraph, daemon: DaemonProcess) -> None:
    """Stands in for a clock jump or suspend: a due, unclaimed delivery the timer never fires for."""
    daemon.write(targets_yaml(graph, "111") + "posts: []\n")
    daemon.start()
    assert wait_until(lambda: daemon.db_path.exists() and "oyez running" in daemon.log(), 15)
    due = soon(0)
    ledger = Ledger(daemon.db)
    ledger.sync([occurrence("post:orphan:page111", due, "found by the sweep", target="page111")],
                due + timedelta(days=1), dry_run=False, now=due)
    ledger.engine.dispose()
    [post] = graph.wait_for_posts(1, timeout=10)
    assert post.message == "found by the sweep"
    assert post.created_time - due.timestamp() < 2.5  # within the 1 s sweep interval, generously
    assert daemon.stop() == 0


ARMED_EARLY = {"OYEZ_ARM_SECONDS": "30"}  # claimed as soon as planned: a wide window to act in


def armed(daemon: DaemonProcess, *job_ids: str) -> bool:
    """These deliveries are claimed (ahead of their instant) and nothing has an outcome yet."""
    rows = {d.job_id: d.status for d in daemon.deliveries()}
    return all(rows.get(j) == "sending" for j in job_ids) and "sent" not in rows.values()


def test_sigkill_while_deliveries_are_armed_then_restart_sends_each_post_exactly_once(
        graph: FakeGraph, daemon: DaemonProcess) -> None:
    """Claimed ahead of their instant, then the daemon dies: nothing went out, and after a
    restart each post goes out once, at or after its time, once its page was checked."""
    daemon.write(targets_yaml(graph, "111", "222") + "posts: []\n")
    daemon.start(env=ARMED_EARLY)
    assert daemon.wait_log("oyez running"), daemon.log()
    due = soon(12)  # timed from a running daemon, however long it took to start
    daemon.write(targets_yaml(graph, "111", "222") + posts_yaml(3, due, 0.5, targets=("page111", "page222")))
    assert wait_until(lambda: armed(daemon, "p0"), 10), (daemon.log(), statuses(daemon))
    daemon.kill()
    assert graph.posts == [] and not [r for r in graph.received if r.method == "POST"]
    daemon.start()
    assert wait_until(lambda: [d.status for d in daemon.deliveries()] == ["sent"] * 6, 40), daemon.log()
    assert daemon.stop() == 0
    for page in ("111", "222"):
        assert messages(graph, page) == [f"p post number {i}" for i in range(3)]  # once each, in order
    assert all(p.created_time >= int(due.timestamp()) for p in graph.posts)  # never before its time
    assert "which stopped: will check page111 for it" in daemon.log()
    feed_reads = [r for r in graph.received if r.method == "GET" and r.path.endswith("/published_posts")]
    first_post = min(r.at for r in graph.received if r.method == "POST")
    assert feed_reads and min(r.at for r in feed_reads) < first_post


def test_a_reload_gives_back_armed_deliveries_it_removes_or_changes(graph: FakeGraph,
                                                                     daemon: DaemonProcess) -> None:
    daemon.write(targets_yaml(graph, "111", "222") + "posts: []\n")
    daemon.start(env=ARMED_EARLY)
    assert daemon.wait_log("oyez running"), daemon.log()
    due = soon(10)
    removed = posts_yaml(1, due, 0, targets=("page111",), prefix="a").removeprefix("posts:\n")
    changed = posts_yaml(1, due, 0, targets=("page222",), prefix="b").removeprefix("posts:\n")
    daemon.write(targets_yaml(graph, "111", "222") + "posts:\n" + removed + changed)
    assert wait_until(lambda: armed(daemon, "a0", "b0"), 10), (daemon.log(), statuses(daemon))
    daemon.write(targets_yaml(graph, "111", "222") + "posts:\n"
                 + changed.replace("b post number 0", "b post number 0, corrected"))
    assert wait_until(lambda: statuses(daemon) == {"a0": "cancelled", "b0": "sent"}, 30), daemon.log()
    assert daemon.stop() == 0
    assert messages(graph) == ["b post number 0, corrected"]
    rows = {d.job_id: d for d in daemon.deliveries()}
    assert rows["a0"].attempts == 0 and rows["b0"].attempts == 1  # given back: no attempt counted
    assert min(p.created_time for p in graph.posts) >= int(due.timestamp())
