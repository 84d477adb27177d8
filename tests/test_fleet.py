"""Several daemons on one ledger: heartbeats in `oyez status`, and a fleet on PostgreSQL."""

from __future__ import annotations

import random
import signal
import socket
import sqlite3
from collections import Counter
from datetime import timedelta

from conftest import TOKEN, DaemonProcess, iso, pg_url, posts_yaml, soon, targets_yaml, wait_until
from fakegraph import FakeGraph, Fault
from sqlmodel import select

from scheduler.ledger import Attempt, Ledger

TOKEN3 = "EAAB-THIRD-TOKEN-333"


def status(daemon: DaemonProcess) -> str:
    return daemon.cli("status", "-c", str(daemon.jobs), check=False).stdout  # 1: needs attention


def test_status_says_which_daemon_runs_where_and_whether_it_is_a_dry_run(
        graph: FakeGraph, daemon: DaemonProcess) -> None:
    daemon.write(targets_yaml(graph, "111") + posts_yaml(1, soon(3600), 1))
    daemon.start("--dry-run", env={"OYEZ_NODE": "comms-1"})
    assert daemon.wait_log("oyez running")
    assert wait_until(lambda: "daemon: running: comms-1" in status(daemon), 15)
    line = next(x for x in status(daemon).splitlines() if x.startswith("daemon: running"))
    assert daemon.proc is not None and f"pid {daemon.proc.pid}" in line and "DRY RUN" in line
    daemon.kill()  # no clean stop: the row stays, and goes stale
    with sqlite3.connect(daemon.db_path) as conn:
        conn.execute("UPDATE daemon SET heartbeat_at = datetime(heartbeat_at, '-2 minutes')")
    text = status(daemon)
    assert "NONE RUNNING" in text and "daemon: STALE (no heartbeat for 1" in text
    daemon.start(env={"OYEZ_NODE": "comms-1"})  # the same node comes back: its row is renewed
    assert wait_until(lambda: "daemon: running: comms-1" in status(daemon), 15)
    assert "DRY RUN" not in status(daemon) and "STALE" not in status(daemon)
    assert daemon.stop() == 0
    assert "NONE RUNNING" in status(daemon) and "comms-1" not in status(daemon)  # a clean stop says so


def test_a_second_daemon_on_one_sqlite_file_warns_once_naming_the_first(
        graph: FakeGraph, daemon: DaemonProcess) -> None:
    daemon.write(targets_yaml(graph, "111") + posts_yaml(1, soon(3600), 1))
    first = daemon.start(env={"OYEZ_NODE": "first"}).proc
    assert daemon.wait_log("oyez running")
    assert first is not None
    second = daemon.start(env={"OYEZ_NODE": "second"}).proc
    assert second is not None
    assert wait_until(lambda: "another oyez daemon uses this ledger file" in daemon.log(), 30)
    warning = next(x for x in daemon.log().splitlines() if "another oyez daemon" in x)
    assert f"first on host {socket.gethostname()}, pid {first.pid}" in warning
    for proc in (second, first):
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    assert daemon.log().count("another oyez daemon uses this ledger file") == 1


def test_a_fleet_of_three_on_postgresql_survives_losing_members(graph: FakeGraph,
                                                                daemon: DaemonProcess) -> None:
    """300 posts over 20 s to 3 pages, with faults; one daemon SIGKILLed and restarted, one stopped."""
    daemon.db = pg_url()
    graph.add_page("333", TOKEN3)
    graph.latency = 0.3  # a send takes a while: a daemon killed at random is likely mid-send
    seed = random.randrange(1_000_000)
    graph.fail_randomly(0.08, [Fault.http_500(create=True), Fault.http_500(create=False),
                               Fault.timeout(0.6, create=True), Fault.graph_error(2)])
    start, pages = soon(6), ("111", "222", "333")
    lines = ["posts:"]
    for i in range(300):
        lines += [f"  - id: f{i}", f"    at: {iso(start + timedelta(seconds=i * 20 / 300))}",
                  f"    message: fleet post {i}", f"    targets: [page{pages[i % 3]}]", "    grace: 5m"]
    daemon.write(targets_yaml(graph, *pages) + "\n".join(lines) + "\n")
    env = {"TOKEN_333": TOKEN3, "OYEZ_LEASE_SECONDS": "3", "OYEZ_HTTP_TIMEOUT": "0.5"}
    procs = {node: daemon.start(env={**env, "OYEZ_NODE": node}).proc for node in ("d1", "d2", "d3")}
    assert wait_until(lambda: daemon.log().count("oyez running") == 3, 60)
    rng = random.Random(seed)
    assert wait_until(lambda: len(graph.posts) >= rng.randint(60, 120), 30), seed

    def sending_by_d1() -> list[str]:
        return [d.key for d in daemon.deliveries() if d.status == "sending" and d.claimed_by == "d1"]

    assert wait_until(lambda: bool(sending_by_d1()), 20, interval=0.01), seed
    killed = procs["d1"]
    assert killed is not None
    killed.kill()  # mid-send: its claims are taken over by the others once their lease runs out
    killed.wait(10)
    stranded = sending_by_d1()
    assert stranded, "d1 finished its send before it was killed; the test needs one in flight"
    assert wait_until(lambda: not sending_by_d1(), 30), stranded
    assert "was being sent by d1, which stopped" in daemon.log()
    procs["d1"] = daemon.start(env={**env, "OYEZ_NODE": "d1"}).proc
    stopped = procs["d2"]
    assert stopped is not None
    stopped.send_signal(signal.SIGTERM)  # for good
    assert stopped.wait(20) == 0

    def all_sent() -> bool:
        return Counter(d.status for d in daemon.deliveries()) == Counter(sent=300)

    assert wait_until(all_sent, 90), (seed, Counter(d.status for d in daemon.deliveries()))
    for node in ("d1", "d3"):
        proc = procs[node]
        assert proc is not None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    messages = Counter(p.message for p in graph.posts)
    assert sorted(messages) == sorted(f"fleet post {i}" for i in range(300)), seed
    assert max(messages.values()) == 1, f"double posts (seed {seed}): {messages.most_common(3)}"
    ledger = Ledger(daemon.db, readonly=True)
    try:
        with ledger.session() as s:
            attempts = list(s.exec(select(Attempt)))
    finally:
        ledger.engine.dispose()
    senders = Counter(a.node for a in attempts if a.outcome in ("sent", "found"))
    assert set(senders) == {"d1", "d2", "d3"} and sum(senders.values()) == 300, senders
    assert TOKEN not in daemon.log()
