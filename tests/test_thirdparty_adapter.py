"""A third-party adapter, installed by pip from its own package, validates, checks and publishes.

tests/thirdparty_adapter is a separate distribution (`oyez-noticeboard`) that
registers `noticeboard` in the `oyez.adapters` entry point group, written from
the README's "Writing an adapter" section alone. It is installed into a
temporary folder (no network: built with the test environment's setuptools)
that only the `oyez` subprocesses see.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DaemonProcess, iso, soon, wait_until

PACKAGE = Path(__file__).parent / "thirdparty_adapter"


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder the package was pip-installed into (its entry points included)."""
    work = tmp_path_factory.mktemp("thirdparty")
    source = shutil.copytree(PACKAGE, work / "src")  # building writes into the source tree
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    "--no-deps", "--no-build-isolation", "--target", str(work / "site"), str(source)],
                   check=True, capture_output=True, timeout=300)
    return work / "site"


def jobs(board: Path, message: str, at: str) -> str:
    return f"""targets:
  board:
    adapter: noticeboard
    path: {board}
    signed: The Comms Team
posts:
  - id: notice
    at: {at}
    message: {message}
"""


def test_installed_adapter_validates_checks_and_publishes(site: Path, daemon: DaemonProcess) -> None:
    daemon.env["PYTHONPATH"] = str(site)
    board = daemon.workdir / "board.jsonl"
    daemon.write(jobs(board, "x" * 141, "2030-01-01 09:00"))
    bad = daemon.cli("validate", "-c", str(daemon.jobs), db=False, check=False)
    assert bad.returncode == 1
    assert "jobs.yaml:9: target board: 141 characters, a notice takes 140" in bad.stderr

    daemon.write(jobs(board, "Office closed on Friday", iso(soon(3))))
    assert "1 target, 1 post" in daemon.cli("validate", "-c", str(daemon.jobs), db=False).stdout
    [_, row] = daemon.cli("check", "-c", str(daemon.jobs), db=False).stdout.splitlines()  # a table
    assert row.split(None, 2) == ["board", "ok", "notices signed The Comms Team; expiry not known for "
                                  "noticeboard"]
    daemon.start()
    assert wait_until(lambda: board.exists() and [d.status for d in daemon.deliveries()] == ["sent"], 20)
    assert daemon.stop() == 0
    [notice] = [json.loads(line) for line in board.read_text().splitlines()]
    assert notice == {"key": "post:notice:board", "text": "Office closed on Friday",
                      "signed": "The Comms Team"}
