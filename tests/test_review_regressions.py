"""Regressions for bugs found in review: each test failed before its fix."""

from __future__ import annotations

import http.server
import signal
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta

import pytest
import requests
from conftest import TOKEN, DaemonProcess, iso, occurrence, posts_yaml, soon, targets_yaml, wait_until
from fakegraph import FakeGraph, Fault
from pydantic import SecretStr

from adapters import http as web
from adapters.base import Message
from adapters.facebook import FacebookPage, FacebookPageSettings
from scheduler import config
from scheduler.errors import ConfigError, TransientError
from scheduler.ledger import Ledger

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
UNTIL = NOW + timedelta(days=1)


def test_a_malformed_number_is_a_located_problem() -> None:
    text = 'targets:\n  p: {adapter: facebook_page, page_id: "1", access_token: x1234}\n' \
           "posts:\n  - id: a\n    at: 2027-01-01 09:00\n    message: 0b_\n"
    with pytest.raises(ConfigError) as info:
        config.parse(text.encode())
    assert info.value.problems == ["jobs.yaml:6: bad value '0b_' (quote it to make it text)"]


@pytest.mark.parametrize("fault", [Fault.retry_after(999_999_999),
                                   Fault.graph_error(80001, regain_minutes=10**12)])
def test_hostile_wait_requests_are_capped(graph: FakeGraph, fault: Fault) -> None:
    graph.fail_next(fault)
    with web.session() as http_session:
        page = FacebookPage(FacebookPageSettings(page_id="111", access_token=SecretStr(TOKEN),
                                                 graph_url=graph.url), http_session)
        with pytest.raises(TransientError) as info:
            page.publish(Message("hi"))
    assert info.value.retry_after is None or info.value.retry_after <= 86400


class _DeepJSON(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = b"[" * 200_000 + b"]" * 200_000
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_deeply_nested_json_is_a_typed_error() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _DeepJSON)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with requests.Session() as session:
            resp = web.call(session, "POST", f"http://127.0.0.1:{server.server_port}/x", timeout=5)
        assert resp.body is None  # not parsed, and no RecursionError
    finally:
        server.shutdown()
        server.server_close()


def test_edited_text_of_an_uncertain_delivery_is_kept(ledger: Ledger) -> None:
    ledger.sync([occurrence("post:a:page", NOW, "Chat at 6pn")], UNTIL, dry_run=False, now=NOW)
    [row] = ledger.deliveries(dry_run=False)
    assert row.id is not None
    claimed = ledger.claim(row.id, "n1", NOW, timedelta(minutes=5))
    assert claimed is not None and ledger.release(claimed, NOW, "timed out")  # now uncertain
    result = ledger.sync([occurrence("post:a:page", NOW, "Chat at 6pm")], UNTIL,
                         dry_run=False, now=NOW)
    assert result.kept_text == ["post:a:page"] and result.changed == []
    [row] = ledger.deliveries(dry_run=False)
    assert row.text == "Chat at 6pn"  # what the network is checked for


@pytest.mark.parametrize("status", ["missed", "failed"])
def test_a_missed_or_failed_post_moved_into_the_future_is_sent_again(ledger: Ledger, status: str) -> None:
    ledger.sync([occurrence("post:a:page", NOW)], UNTIL, dry_run=False, now=NOW)
    later = NOW + timedelta(minutes=20)
    if status == "missed":
        ledger.expire(later, dry_run=False)
    else:
        [row] = ledger.deliveries(dry_run=False)
        assert row.id is not None
        claimed = ledger.claim(row.id, "n1", NOW, timedelta(minutes=5))
        assert claimed is not None
        from scheduler.ledger import Attempt
        ledger.finish(claimed, "n1", Attempt(delivery_id=row.id, number=1, node="n1", started_at=NOW,
                                             finished_at=NOW, outcome="permanent", lateness_ms=0),
                      status="failed", error="(#100) Invalid parameter")
    assert [d.status for d in ledger.deliveries(dry_run=False)] == [status]
    unchanged = ledger.sync([occurrence("post:a:page", NOW)], UNTIL, dry_run=False, now=later)
    assert unchanged.changed == []
    moved = ledger.sync([occurrence("post:a:page", later + timedelta(hours=1))], UNTIL,
                        dry_run=False, now=later)
    assert moved.changed == ["post:a:page"]
    [row] = ledger.deliveries(dry_run=False)
    assert (row.status, row.attempts, row.error) == ("pending", 0, None)


def test_fixed_node_name_recovers_its_own_claim_after_kill(graph: FakeGraph, daemon: DaemonProcess) -> None:
    graph.fail_next(Fault.timeout(3, create=True))
    daemon.write(targets_yaml(graph, "111") + posts_yaml(1, soon(3), 0))
    env = {"OYEZ_NODE": "server1", "OYEZ_HTTP_TIMEOUT": "10"}
    daemon.start(env=env)
    assert wait_until(lambda: len(graph.posts) == 1, 15)
    daemon.kill()  # mid-request: the row is left `sending`, claimed by "server1"
    assert [d.status for d in daemon.deliveries()] == ["sending"]
    daemon.start(env=env)
    assert wait_until(lambda: [d.status for d in daemon.deliveries()] == ["sent"], 10)
    assert daemon.stop() == 0
    assert len(graph.posts) == 1
    assert "was being sent by server1" in daemon.log()


def test_late_unknown_outcome_is_looked_up_not_declared_missed(graph: FakeGraph,
                                                               daemon: DaemonProcess) -> None:
    graph.fail_next(Fault.timeout(4, create=True))  # created, but the answer comes too late
    daemon.write(targets_yaml(graph, "111") + posts_yaml(1, soon(3), 0, grace="1s"))
    daemon.start(env={"OYEZ_HTTP_TIMEOUT": "1"})
    assert wait_until(lambda: [d.status for d in daemon.deliveries()] == ["sent"], 15)
    assert daemon.stop() == 0
    [row] = daemon.deliveries()
    assert row.remote_id == graph.posts[0].id and len(graph.posts) == 1
    assert row.error and "found on the network" in row.error


def test_sigterm_during_a_slow_start_is_a_clean_stop(graph: FakeGraph, daemon: DaemonProcess) -> None:
    daemon.write(targets_yaml(graph, "111") + posts_yaml(3000, soon(3600), 1))
    daemon.start()
    assert daemon.wait_log("starting: reading", timeout=60)  # now reading 3,000 posts
    assert daemon.stop() == 0
    assert "stopping" in daemon.log()


@pytest.mark.parametrize("command", ["run", "validate"])
def test_a_stop_signal_while_importing_is_held(graph: FakeGraph, daemon: DaemonProcess,
                                               command: str) -> None:
    """SIGTERM before the imports finish: `run` stops cleanly, other commands die of it as usual."""
    daemon.write(targets_yaml(graph, "111") + posts_yaml(1, soon(3600), 1))
    code = ("import os, signal, sys\n"
            "from scheduler import entry\n"
            "entry.hold()\n"
            "os.kill(os.getpid(), signal.SIGTERM)  # lands before any of oyez is imported\n"
            "sys.exit(entry.main())\n")
    args = [command, "-c", str(daemon.jobs)] + (["--db", daemon.db] if command == "run" else [])
    result = subprocess.run([sys.executable, "-c", code, *args], cwd=daemon.workdir, env=daemon.env,
                            capture_output=True, text=True, timeout=60)
    if command == "run":
        assert result.returncode == 0, result.stderr
        assert "stopping (asked to while starting)" in result.stderr
        assert graph.received == []
    else:
        assert result.returncode == -signal.SIGTERM, result.stderr


def test_health_is_not_recorded_for_settings_already_replaced(graph: FakeGraph,
                                                              daemon: DaemonProcess) -> None:
    """A 190 that arrives after a reload switched the token must not hold the new token."""
    new = "EAAB-NEW-GOOD-TOKEN"
    graph.set_token("111", new)  # the token in TOKEN_111 is refused from now on
    graph.fail_next(Fault.timeout(3, create=True))  # ... and the refusal is slow to come
    body = (f"posts:\n  - id: a\n    at: {iso(soon(2))}\n    message: first\n"
            f"  - id: b\n    at: {iso(soon(9))}\n    message: second\n    grace: 1m\n")
    daemon.write(targets_yaml(graph, "111") + body)
    daemon.start(env={"NEWTOK": new, "OYEZ_HTTP_TIMEOUT": "10"})
    assert wait_until(lambda: len(graph.received) == 1, 10)
    daemon.write(targets_yaml(graph, "111").replace("${TOKEN_111}", "${NEWTOK}") + body)
    assert wait_until(lambda: sorted(p.message for p in graph.posts) == ["first", "second"], 25)
    assert daemon.stop() == 0
    assert {d.status for d in daemon.deliveries()} == {"sent"}
