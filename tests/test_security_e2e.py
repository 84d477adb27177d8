"""Tokens never leak: a full daemon life with known canary tokens, then grep everything."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from conftest import TOKEN, TOKEN2, DaemonProcess, posts_yaml, soon, targets_yaml, wait_until
from fakegraph import FakeGraph, Fault


def test_canary_tokens_appear_nowhere(graph: FakeGraph, daemon: DaemonProcess) -> None:
    graph.set_token("222", "EAAB-SOMETHING-ELSE")  # page 222 answers 190 to our token
    graph.fail_next(
        Fault.http_500(create=True),
        Fault.timeout(3, create=True),
        Fault.graph_error(4, regain_minutes=0),
        Fault.graph_error(100, message=f"(#100) Invalid parameter near access_token={TOKEN}"),
        Fault.graph_error(506),
        Fault.non_json(),
        Fault.redirect(f"https://evil.example/?token={TOKEN}"),
        page_id="111",
    )
    daemon.write(targets_yaml(graph, "111", "222")
                 + posts_yaml(10, soon(3), 0.3, targets=("page111", "page222")))
    daemon.start()
    assert wait_until(lambda: len(graph.posts) >= 3, 20)
    daemon.kill()  # a crash mid-way
    daemon.start()
    assert wait_until(lambda: all(d.status in ("sent", "failed") for d in daemon.deliveries()
                                  if d.target == "page111"), 40)
    assert daemon.stop() == 0
    statuses = {d.status for d in daemon.deliveries()}
    assert {"sent", "failed", "pending"} <= statuses  # success, permanent errors, held by auth
    assert "target page222 is unhealthy" in daemon.log()

    outputs = [daemon.log(), daemon.out()]
    for args in (["history"], ["history", "--json", "--limit", "100"], ["history", "--reloads"],
                 ["status", "-c", str(daemon.jobs)], ["plan", "-c", str(daemon.jobs), "--json"],
                 ["diff", "-c", str(daemon.jobs)], ["validate", "-c", str(daemon.jobs)],
                 ["export-ics", "-c", str(daemon.jobs)]):
        result = daemon.cli(*args, db=args[0] != "validate", check=False)
        needs_attention = args[0] == "status"  # the daemon is stopped, a target refused
        assert result.returncode == int(needs_attention), (args, result.stderr[-500:])
        outputs += [result.stdout, result.stderr]
    db_files = [p for p in daemon.workdir.iterdir() if p.name.startswith("oyez.db")]
    for token in (TOKEN, TOKEN2):
        assert not any(token in text for text in outputs)
        assert not any(token.encode() in p.read_bytes() for p in db_files)
    assert "[REDACTED]" in daemon.log()  # the echoed token was caught, not merely absent


def test_world_readable_files_are_warned_about(graph: FakeGraph, daemon: DaemonProcess) -> None:
    daemon.write(targets_yaml(graph, "111") + "posts: []\n")
    env_file = daemon.workdir / ".env"
    env_file.write_text("OYEZ_LOG_LEVEL=INFO\n")
    os.chmod(env_file, 0o644)
    os.chmod(daemon.jobs, 0o600)
    daemon.start()
    assert daemon.wait_log("oyez running")
    time.sleep(0.2)
    assert daemon.stop() == 0
    log = daemon.log()
    assert ".env is readable by other users on this server; fix: chmod 600 .env" in log
    assert f"{daemon.jobs} is readable" not in log


def test_validate_never_expands_env_into_messages(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text('targets:\n  p: {adapter: facebook_page, page_id: "1", access_token: "${T}"}\n'
                    "posts:\n  - id: leak\n    at: 2027-01-01 09:00\n    message: 'token is ${T}'\n")
    result = subprocess.run([sys.executable, "-m", "scheduler", "plan", "-c", str(jobs), "--from",
                             "2026-12-31 00:00", "--json"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60, env={**os.environ, "T": TOKEN})
    assert result.returncode == 0, result.stderr
    assert "token is ${T}" in result.stdout and TOKEN not in result.stdout + result.stderr
