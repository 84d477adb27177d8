"""Shared fixtures: the fake Graph server, jobs files, and the daemon as a real subprocess."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fakebluesky import FakeBluesky
from fakegraph import FakeGraph
from fakemastodon import FakeMastodon
from fakewebhook import FakeWebhook
from sqlalchemy import create_engine, text
from sqlmodel import SQLModel

from scheduler.ledger import Delivery, Ledger
from scheduler.plan import Occurrence

TOKEN = "EAAB-SECRET-CANARY"  # grep for this: it must never show up in output, logs or the DB
TOKEN2 = "EAAB-OTHER-TOKEN-222"
MASTO_TOKEN = "MASTO-SECRET-CANARY"
BSKY_PASSWORD = "bsky-app-pass-canary"
SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
SAMPLE_ENV = {"FB_PAGE_ID": "1234567890", "FB_PAGE_ACCESS_TOKEN": TOKEN}
SAMPLE_HEAD = """\
timezone: Europe/London
targets:
  police-page:
    adapter: facebook_page
    page_id: ${FB_PAGE_ID}
    access_token: ${FB_PAGE_ACCESS_TOKEN}
"""  # lines 1-6 of a jobs file like the sample's, secrets from SAMPLE_ENV
FAST_ENV = {
    "OYEZ_SWEEP_SECONDS": "1",
    "OYEZ_WATCH_SECONDS": "0.2",
    "OYEZ_RETRY_BASE_SECONDS": "0.3",
    "OYEZ_RETRY_CAP_SECONDS": "2",
    "OYEZ_HTTP_TIMEOUT": "2",
    "OYEZ_LOG_LEVEL": "DEBUG",
}


@pytest.fixture
def graph() -> Iterator[FakeGraph]:
    """A fake Graph API with pages 111 and 222."""
    with FakeGraph({"111": TOKEN, "222": TOKEN2}) as fake:
        yield fake
        assert fake.errors == []


@pytest.fixture
def masto() -> Iterator[FakeMastodon]:
    with FakeMastodon({MASTO_TOKEN: "police"}) as fake:
        yield fake
        assert fake.errors == []


@pytest.fixture
def bsky() -> Iterator[FakeBluesky]:
    with FakeBluesky({"police.example.org": BSKY_PASSWORD}) as fake:
        yield fake
        assert fake.errors == []


@pytest.fixture
def hook() -> Iterator[FakeWebhook]:
    with FakeWebhook(SECRET) as fake:
        yield fake
        assert fake.errors == []


def iso(moment: datetime) -> str:
    """An ISO 8601 instant with offset, to the millisecond."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


def soon(seconds: float, base: datetime | None = None) -> datetime:
    """The instant `seconds` after `base` (default: now)."""
    return (base or datetime.now(UTC)) + timedelta(seconds=seconds)


def targets_yaml(graph: FakeGraph, *pages: str) -> str:
    """A `targets:` block with one facebook_page target per page id (tokens from env)."""
    lines = ["targets:"]
    for page in pages or ("111",):
        lines += [f"  page{page}:", "    adapter: facebook_page", f'    page_id: "{page}"',
                  f"    access_token: ${{TOKEN_{page}}}", f"    graph_url: {graph.url}"]
    return "\n".join(lines) + "\n"


def posts_yaml(count: int, start: datetime, spacing: float, *, targets: tuple[str, ...] = ("page111",),
               grace: str | None = None, prefix: str = "p") -> str:
    lines = ["posts:"]
    for i in range(count):
        lines += [f"  - id: {prefix}{i}", f"    at: {iso(start + timedelta(seconds=i * spacing))}",
                  f"    message: {prefix} post number {i}", f"    targets: [{', '.join(targets)}]"]
        if grace:
            lines.append(f"    grace: {grace}")
    return "\n".join(lines) + "\n"



class DaemonProcess:
    """`oyez run` in a subprocess with its own working directory, log and database.

    A second daemon on the same directory (same jobs.yaml and database) takes
    another `name`, which prefixes its log files.
    """

    def __init__(self, workdir: Path, env: dict[str, str], name: str = "daemon") -> None:
        self.workdir = workdir
        self.name = name
        self.env = env
        self.db_path = workdir / "oyez.db"
        self.db = f"sqlite:///{self.db_path}"
        self.jobs = workdir / "jobs.yaml"
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0

    def write(self, text: str) -> None:
        """Replace jobs.yaml the way editors do: write a temp file, then rename."""
        tmp = self.workdir / ".jobs.yaml.tmp"
        tmp.write_text(text)
        os.replace(tmp, self.jobs)

    def start(self, *extra: str, env: dict[str, str] | None = None) -> DaemonProcess:
        self.runs += 1
        log = open(self.workdir / f"{self.name}-{self.runs}.log", "wb")  # noqa: SIM115
        out = open(self.workdir / f"{self.name}-{self.runs}.out", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "scheduler", "run", "-c", str(self.jobs), "--db", self.db, *extra],
            cwd=self.workdir, env={**self.env, **(env or {})}, stdout=out, stderr=log,
        )
        log.close()
        out.close()
        return self

    def stop(self, timeout: float = 20) -> int:
        """SIGTERM and wait; return the exit status."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """SIGKILL: no cleanup at all."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def log(self) -> str:
        """Everything every run wrote to stderr."""
        return "".join(p.read_text(errors="replace") for p in sorted(self.workdir.glob(f"{self.name}-*.log")))

    def out(self) -> str:
        """Everything every run wrote to stdout."""
        return "".join(p.read_text(errors="replace") for p in sorted(self.workdir.glob(f"{self.name}-*.out")))

    def wait_log(self, text: str, timeout: float = 15) -> bool:
        """Wait until `text` appears in the log."""
        return wait_until(lambda: text in self.log(), timeout)

    def cli(self, *args: str, db: bool = True, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run another `oyez` command next to the daemon, with its environment and database."""
        return subprocess.run([sys.executable, "-m", "scheduler", *args, *(["--db", self.db] if db else [])],
                              cwd=self.workdir, env=self.env, capture_output=True, text=True, timeout=60,
                              check=check)

    def deliveries(self, dry_run: bool = False) -> list[Delivery]:
        ledger = Ledger(self.db)
        try:
            return list(ledger.deliveries(dry_run=dry_run))
        finally:
            ledger.engine.dispose()


def wait_until(check: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll `check` until true or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return check()


PG_HINT = ("set OYEZ_TEST_PG to a scratch PostgreSQL database to run them, e.g. "
           "OYEZ_TEST_PG=postgresql+psycopg://oyez:oyez@127.0.0.1/oyez scripts/test "
           "(.ci/run shows how to install and start one)")


def pg_url() -> str:
    """The scratch PostgreSQL database for tests (emptied here); skipped without one, failed in CI."""
    url = os.environ.get("OYEZ_TEST_PG")
    if not url:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but OYEZ_TEST_PG is not set: PostgreSQL tests must run in CI; {PG_HINT}")
        pytest.skip(f"PostgreSQL tests skipped: {PG_HINT}")
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker:  # tests run in parallel: each worker gets a schema of its own in the scratch database
        schema = f"oyez_{worker}"
        engine = create_engine(url)
        with engine.begin() as conn:
            conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {schema}"))
        engine.dispose()
        url += f"{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"
    engine = create_engine(url)
    with engine.begin() as conn:  # a fresh, empty database: the ledger creates its own tables
        SQLModel.metadata.drop_all(conn)
        conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    engine.dispose()
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh ledger database: a SQLite file, and (OYEZ_TEST_PG) a PostgreSQL database."""
    return f"sqlite:///{tmp_path / 'oyez.db'}" if request.param == "sqlite" else pg_url()


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    """A fresh ledger on each database the suite runs against (see `ledger_url`)."""
    led = Ledger(ledger_url)
    yield led
    led.engine.dispose()


def occurrence(key: str, due: datetime, text: str = "hello", *, target: str = "page",
               draft: bool = False) -> Occurrence:
    """A one-message occurrence with a 15-minute grace, keyed `kind:job:...`."""
    return Occurrence(key=key, job_id=key.split(":")[1], part="post", target=target, due=due,
                      deadline=due + timedelta(minutes=15), text=text, link=None, image=None,
                      draft=draft, tz_name="UTC")


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[DaemonProcess]:
    """A daemon runner in a fresh directory; whatever is left running is killed at the end."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OYEZ_", "FB_"))}
    env.update(FAST_ENV, TOKEN_111=TOKEN, TOKEN_222=TOKEN2, PYTHONUNBUFFERED="1",
               MASTO_TOKEN=MASTO_TOKEN, BSKY_PASSWORD=BSKY_PASSWORD, HOOK_SECRET=SECRET)
    proc = DaemonProcess(tmp_path, env)
    yield proc
    if proc.proc is not None and proc.proc.poll() is None:
        proc.kill()
