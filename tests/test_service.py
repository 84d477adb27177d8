"""Running as a service: the systemd unit, the notify protocol, a bounded stop, JSON logs."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import DaemonProcess, posts_yaml, soon, targets_yaml, wait_until
from fakegraph import FakeGraph, Fault

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "deploy" / "oyez.service"


def test_unit_file_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        if os.environ.get("CI") == "true":
            pytest.fail("systemd-analyze is missing in CI: .ci/run installs Debian's systemd package")
        pytest.skip("systemd-analyze not installed (apt-get install systemd); CI runs this test")
    text = UNIT.read_text()
    for line in ("Type=notify", "Restart=on-failure", "NoNewPrivileges=yes", "ProtectSystem=strict",
                 "ReadWritePaths=/var/lib/oyez", "PrivateTmp=yes", "User=oyez"):
        assert f"\n{line}\n" in text, line
    assert "WatchdogSec=" in text and "EnvironmentFile=" in text
    # verify insists that ExecStart exists: point it at this checkout's oyez
    oyez = Path(sys.executable).with_name("oyez")
    unit = tmp_path / "oyez.service"
    unit.write_text(text.replace("/opt/oyez/.venv/bin/oyez", str(oyez)))
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "oyez.service" not in result.stderr, result.stderr  # no warnings about our unit


@pytest.fixture(params=["path", "abstract"])
def notify_socket(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket standing in for systemd's, and the $NOTIFY_SOCKET naming it."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        name = str(tmp_path / "notify.sock")
        sock.bind(name)
    else:
        name = f"@oyez-test-{uuid.uuid4().hex}"
        sock.bind("\0" + name[1:])
    sock.settimeout(0.2)
    yield sock, name
    sock.close()


def received(sock: socket.socket, seconds: float) -> list[str]:
    """Every datagram that arrives within `seconds`."""
    got: list[str] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            got.append(sock.recv(4096).decode())
        except TimeoutError:
            continue
    return got


def test_notify_ready_then_periodic_watchdog_then_stopping(
        graph: FakeGraph, daemon: DaemonProcess, notify_socket: tuple[socket.socket, str]) -> None:
    sock, name = notify_socket
    daemon.write(targets_yaml(graph, "111") + "posts: []\n")
    daemon.start(env={"NOTIFY_SOCKET": name, "WATCHDOG_USEC": "1000000"})
    messages: list[str] = []
    assert wait_until(lambda: bool(messages.extend(received(sock, 0.2))) or "READY=1" in messages, 30), \
        daemon.log()
    assert "oyez running" in daemon.log()  # ready only once the schedule is built
    first = messages.index("READY=1")
    later = received(sock, 2.5)
    assert later.count("WATCHDOG=1") >= 3  # every half WatchdogSec, or more often
    assert messages[:first] == []
    assert daemon.stop() == 0
    assert "STOPPING=1" in messages + later + received(sock, 1.0)


def test_sigterm_waits_for_a_send_in_flight(graph: FakeGraph, daemon: DaemonProcess) -> None:
    graph.fail_next(Fault.timeout(1.5, create=True))  # answered after 1.5 s
    daemon.write(targets_yaml(graph, "111") + posts_yaml(1, soon(2), 1))
    daemon.start(env={"OYEZ_HTTP_TIMEOUT": "10"})
    assert wait_until(lambda: len(graph.posts) == 1, 20)  # created; the answer is 1.5 s away
    assert daemon.stop() == 0
    [row] = daemon.deliveries()
    assert row.status == "sent" and row.remote_id == graph.posts[0].id


def test_sigterm_leaves_a_stuck_send_to_crash_recovery(graph: FakeGraph, daemon: DaemonProcess) -> None:
    graph.fail_next(Fault.timeout(30, create=True))
    daemon.write(targets_yaml(graph, "111") + posts_yaml(1, soon(2), 1, grace="5m"))
    daemon.start(env={"OYEZ_STOP_SECONDS": "1", "OYEZ_HTTP_TIMEOUT": "60"})
    assert wait_until(lambda: len(graph.posts) == 1, 20)
    began = time.monotonic()
    assert daemon.stop() == 0
    assert time.monotonic() - began < 10
    assert "1 sends still in flight after 1s" in daemon.log()
    [row] = daemon.deliveries()
    assert row.status == "sending"  # left for the next start to check on the page
    daemon.start()
    assert wait_until(lambda: [d.status for d in daemon.deliveries()] == ["sent"], 20), daemon.log()
    assert len(graph.posts) == 1  # found on the page, not posted twice
    assert daemon.stop() == 0


def test_json_logs_carry_delivery_fields_and_no_secrets(graph: FakeGraph, daemon: DaemonProcess) -> None:
    daemon.write(targets_yaml(graph, "111") + posts_yaml(1, soon(2), 1))
    daemon.start("--db", daemon.db, env={"OYEZ_LOG_FORMAT": "json", "OYEZ_LOG_LEVEL": "INFO"})
    assert wait_until(lambda: '"status": "sent"' in daemon.log(), 20), daemon.log()
    assert daemon.stop() == 0
    entries = [json.loads(line) for line in daemon.log().splitlines()]  # every line is JSON
    assert {e["level"] for e in entries} <= {"INFO", "WARNING", "ERROR"}
    [sent] = [e for e in entries if e.get("status") == "sent"]
    assert sent["delivery"] == "post:p0:page111" and sent["target"] == "page111"
    assert isinstance(sent["lateness_ms"], int) and sent["message"].startswith("sent post:p0")
    assert "EAAB" not in daemon.log()
