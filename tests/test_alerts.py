"""Incidents in the ledger, alert messages, the alerts: section and `oyez alerts test`."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from conftest import targets_yaml
from fakegraph import FakeGraph
from receivers import JsonReceiver

from scheduler.alerts import compose
from scheduler.incidents import Claimed, Incidents
from scheduler.ledger import Ledger

T0 = datetime(2027, 1, 14, 18, 0, tzinfo=UTC)


def test_an_incident_alerts_once_across_daemons_and_once_when_resolved(ledger: Ledger) -> None:
    other = Ledger(ledger.url)  # a second daemon on the same database
    a, b = Incidents(ledger), Incidents(other)
    try:
        assert a.open("unhealthy", "page-a", "token refused", T0) is True
        assert b.open("unhealthy", "page-a", "token refused", T0 + timedelta(seconds=1)) is False
        first = a.claim("node-a", T0)
        assert [i.key for i in first.opened] == ["unhealthy:page-a"] and first.opened[0].count == 2
        assert b.claim("node-b", T0) == Claimed([], [])  # already claimed by node-a
        assert [i.key for i in a.still_open()] == ["unhealthy:page-a"]
        assert b.resolve("unhealthy", "page-a", "token works again", T0) is True
        assert a.resolve("unhealthy", "page-a", "token works again", T0) is False
        done = b.claim("node-b", T0)
        assert done.opened == [] and [i.resolution for i in done.resolved] == ["token works again"]
        assert a.claim("node-a", T0) == Claimed([], []) and a.still_open() == []
        assert a.open("unhealthy", "page-a", "refused again", T0 + timedelta(days=1)) is True  # anew
        assert [i.detail for i in b.claim("node-b", T0).opened] == ["refused again"]
    finally:
        other.engine.dispose()


def test_an_event_alerts_once_and_never_resolves(ledger: Ledger) -> None:
    incidents = Incidents(ledger)
    assert incidents.open("failed", "post:x:page-a", "Graph error 100", T0, event=True)
    claimed = incidents.claim("n", T0)
    assert [i.key for i in claimed.opened] == ["failed:post:x:page-a"]
    title, body = compose(claimed, "n")
    assert title == "oyez: post failed: post:x:page-a" and "RESOLVED" not in body
    assert incidents.claim("n", T0) == Claimed([], []) and incidents.still_open() == []


def test_a_burst_is_one_message_with_a_count(ledger: Ledger) -> None:
    incidents = Incidents(ledger)
    for i in range(50):
        incidents.open("failed", f"post:p{i}:page-a", "page gone", T0, event=True)
    title, body = compose(incidents.claim("n", T0), "n")
    assert title == "oyez: 50 problems, 0 resolved"
    assert len(re.findall(r"^PROBLEM ", body, re.M)) == 10
    assert "... and 40 more: post failed" in body


def oyez(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "scheduler", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=60, env={"PATH": "/usr/bin:/bin", **env})


def test_alert_urls_are_validated_located_without_echoing_secrets(tmp_path: Path, graph: FakeGraph) -> None:
    (tmp_path / "jobs.yaml").write_text(targets_yaml(graph, "111") + """\
alerts:
  - json://127.0.0.1:9/hook
  - nosuchservice://user:HUNTER2-SECRET@example.org/x
  - ${HOOK_URL}
  - ${MISSING_URL}
posts: []
""")
    env = {"TOKEN_111": "EAAB-TOKEN", "HOOK_URL": "slack://ENV-SECRET-VALUE"}
    result = oyez("validate", "--strict", cwd=tmp_path, env=env)  # --strict: unset variables are errors
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "jobs.yaml:9: alerts[1]: not a notification URL Apprise can use (scheme 'nosuchservice'; "
        "see https://github.com/caronc/apprise/wiki for the URL of each service)",
        "jobs.yaml:10: alerts[2]: not a notification URL Apprise can use (scheme 'slack'; "
        "see https://github.com/caronc/apprise/wiki for the URL of each service)",
        "jobs.yaml:11: environment variable MISSING_URL is not set (set it or add it to .env)",
    ]
    assert "HUNTER2" not in result.stdout + result.stderr and "ENV-SECRET" not in result.stderr


def test_alerts_test_sends_to_every_channel(tmp_path: Path, graph: FakeGraph) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead = f"json://127.0.0.1:{closed.getsockname()[1]}/nobody"  # bound, not listening: refused
        with JsonReceiver() as hook:
            (tmp_path / "jobs.yaml").write_text(targets_yaml(graph, "111")
                                                + f"alerts: [{hook.url}, {dead}]\nposts: []\n")
            result = oyez("alerts", "test", cwd=tmp_path, env={"TOKEN_111": "EAAB-TOKEN"})
            assert result.stdout.splitlines() == ["channel 1 (json): sent", "channel 2 (json): FAILED"]
            assert result.returncode == 1
            [message] = hook.messages
            assert message["title"] == "oyez: test alert"
    (tmp_path / "jobs.yaml").write_text(targets_yaml(graph, "111") + "posts: []\n")
    none = oyez("alerts", "test", cwd=tmp_path, env={"TOKEN_111": "EAAB-TOKEN"})
    assert none.returncode == 1 and "has no alerts: section" in none.stderr
