"""The web page over real HTTP: pages, token rule, read-only rule, /healthz, /metrics, the .ics feed."""

from __future__ import annotations

import base64
import http.client
import json
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import webdata
from conftest import DaemonProcess, soon, targets_yaml, wait_until
from fakegraph import FakeGraph
from icalendar import Calendar
from prometheus_client.parser import text_string_to_metric_families
from sqlmodel import update

from scheduler import config, plan, report
from scheduler.errors import ConfigError, OyezError
from scheduler.ledger import DaemonRow, Delivery, Ledger
from scheduler.settings import Settings
from scheduler.web import WebServer, is_loopback, parse_bind

TOKEN = "web-token-0123456789-abcdef"
Fetch = Callable[..., tuple[int, dict[str, str], bytes]]


def fetch(url: str, method: str = "GET", headers: dict[str, str] | None = None,
          body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request; (status, lower-cased headers, body)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    try:
        conn.request(method, parts.path + (f"?{parts.query}" if parts.query else ""), body=body,
                     headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


class Site:
    """The sample jobs.yaml and a ledger holding every status, served on 127.0.0.1."""

    def __init__(self, tmp: Path) -> None:
        self.jobs, self.db = webdata.sample_files(tmp)
        self.ledger = Ledger(self.db)
        webdata.fill(self.ledger, self.jobs)
        self.now = webdata.NOW
        self.servers: list[WebServer] = []

    def serve(self, token: str | None = None) -> str:
        server = WebServer(self.jobs, Settings(db=self.db, web_token=token), "127.0.0.1:0",
                           now=lambda: self.now)
        server.start()
        self.servers.append(server)
        return server.url.rstrip("/")

    def id_of(self, key: str) -> int:
        [row] = [d for d in self.ledger.deliveries(dry_run=False) if d.key == key]
        assert row.id is not None
        return row.id

    def close(self) -> None:
        for server in self.servers:
            server.stop()
        self.ledger.engine.dispose()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    s = Site(tmp_path)
    yield s
    s.close()


# --- the pages -------------------------------------------------------------

def test_timeline_shows_each_status_the_live_event_as_one_block_and_past_outcomes(site: Site) -> None:
    status, headers, body = fetch(site.serve() + "/?from=2027-01-11&days=5")
    assert status == 200 and headers["content-type"] == "text/html; charset=utf-8"
    page = body.decode()
    days = re.findall(r'<h2 id="day-([\d-]+)">', page)
    assert days == ["2027-01-11", "2027-01-12", "2027-01-13", "2027-01-14", "2027-01-15"]
    block = re.search(r'<li class="event" id="event-hate-crime-live-chat">(.*?)</ol>\s*</li>', page, re.S)
    assert block is not None, "the live event is one block"
    assert "Facebook live chat on hate crime" in block[1] and "18:00</time>" in block[1]
    assert [m for m in re.findall(r'<span class="kind">(\w+)</span> to', block[1])] == [
        "reminder", "reminder", "live", "thanks"]  # its posts around it, in time order
    # its posts on the event's day are only in the block; the two-day reminder is on its own day too
    assert page.count("live now: Facebook live chat") == 1 and page.count("Thursday 6pm") == 2
    for word in ("sent", "failed", "missed", "pending", "cancelled"):
        assert re.search(rf'<span class="icon" aria-hidden="true">.</span> {word}</span>', page), word
    assert 'href="https://www.facebook.com/123_456">view the post on the network</a>' in page
    assert "Sent 64.2 s late" in page
    assert "(#100) Invalid parameter" in page and "not sent within its window" in page
    assert "removed from jobs.yaml" in page
    assert 'Image: <a href="https://example.org/img/hate-crime-chat.jpg">' in page
    assert "<img" not in page  # post images are linked, never fetched by the viewer's browser
    assert "<script" not in page


def test_timeline_rejects_bad_parameters_and_unknown_paths(site: Site) -> None:
    url = site.serve()
    assert fetch(url + "/?from=yesterday")[0] == 400
    assert fetch(url + "/?from=9999-12-31")[0] == 400
    assert b"expected a whole number" in fetch(url + "/?days=1000")[2]
    assert fetch(url + "/nope")[0] == 404
    assert fetch(url + "/delivery/999999")[0] == 404
    assert fetch(url + "/delivery/abc")[0] == 404


def test_post_text_is_escaped(site: Site) -> None:
    Path(site.jobs).write_text(Path(site.jobs).read_text().replace(
        "Safety tip of the week: lock", "Safety tip <script>alert(1)</script> & lock"))
    page = fetch(site.serve() + "/?from=2027-01-18&days=1")[2].decode()
    assert "Safety tip &lt;script&gt;alert(1)&lt;/script&gt; &amp; lock" in page
    assert "<script>" not in page


def test_delivery_page_lists_every_attempt(site: Site) -> None:
    page = fetch(site.serve() + f"/delivery/{site.id_of(webdata.ANNOUNCE)}")[2].decode()
    rows = re.findall(r"<tr><td>(\d)</td><td>([\d: -]+)</td><td>[\d: -]+</td><td>([^<]+)</td>"
                      r"<td>(\w+)</td><td>[^<]*</td><td>([^<]*)</td></tr>", page)
    assert rows == [("1", "2027-01-12 07:49:00", "web1:4242", "transient",
                     "Graph 2: Service temporarily unavailable"),
                    ("2", "2027-01-12 07:50:04", "web1:4242", "sent", "")]
    assert "<code>post:live-chat-announce:police-page</code>" in page


def test_status_page_says_what_oyez_status_says(site: Site) -> None:
    url = site.serve()
    page = fetch(url + "/status")[2].decode()
    assert "web1:4242" in page and "running</span>" in page
    assert re.search(r"<td>police-page</td><td><span class=\"badge ok\">.*? healthy</span>", page)
    Path(site.jobs).write_text(Path(site.jobs).read_text().replace("    cron: \"0 9 * * MON\"",
                                                                   "    cron: \"0 9 * * MOON\""))
    page = fetch(url + "/status")[2].decode()
    state = report.status(site.jobs, site.db, site.now)
    assert state["problems"] and all(p.startswith("jobs.yaml:") for p in state["problems"])
    for line in [*state["schedule"], *state["problems"], *state["attention"]]:
        assert line.replace("'", "&#39;").replace('"', "&#34;") in page


# --- private by default ----------------------------------------------------

@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.3.2.1", True), ("::1", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("192.168.1.5", False), ("oyez.example.org", False),
])
def test_only_loopback_counts_as_private(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_bind_is_parsed_or_refused() -> None:
    assert parse_bind("127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert parse_bind("[::1]:0") == ("::1", 0)
    for bad in ("8080", "127.0.0.1", "127.0.0.1:http", ":80", "127.0.0.1:70000"):
        with pytest.raises(OyezError, match="expected HOST:PORT"):
            parse_bind(bad)


def test_any_other_address_needs_the_token(tmp_path: Path) -> None:
    with pytest.raises(OyezError, match="without OYEZ_WEB_TOKEN"):
        WebServer(str(tmp_path / "jobs.yaml"), Settings(db="sqlite:///x.db"), "0.0.0.0:0")
    result = subprocess.run([sys.executable, "-m", "scheduler", "web", "--bind", "0.0.0.0:0"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60,
                            env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 1
    assert "refusing to serve the page on 0.0.0.0:0 without OYEZ_WEB_TOKEN" in result.stderr
    assert "Traceback" not in result.stderr
    with pytest.raises(ConfigError, match="OYEZ_WEB_TOKEN"):
        Settings.from_env({"OYEZ_WEB_TOKEN": "short"})


def test_with_a_token_every_route_but_healthz_asks_for_it(site: Site,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    url = site.serve(token=TOKEN)
    basic = base64.b64encode(f"anyone:{TOKEN}".encode()).decode()
    for path in ("/", "/status", "/calendar.ics", "/metrics", f"/delivery/{site.id_of(webdata.CRON)}",
                 "/static/style.css"):
        status, headers, body = fetch(url + path)
        assert status == 401 and headers["www-authenticate"].startswith("Basic realm=")
        assert b"Safety tip" not in body
        for wrong in (f"Bearer {TOKEN[:-1]}", f"Bearer {TOKEN}x", "Basic !!!", f"Token {TOKEN}",
                      "Basic " + base64.b64encode(f"{TOKEN}:wrong".encode()).decode()):
            assert fetch(url + path, headers={"Authorization": wrong})[0] == 401, (path, wrong)
        assert fetch(url + path, headers={"Authorization": f"Bearer {TOKEN}"})[0] == 200, path
        assert fetch(url + path, headers={"Authorization": f"Basic {basic}"})[0] == 200, path
    status, _, body = fetch(url + "/healthz")  # monitoring needs no token, and sees no post text
    assert status == 503 and json.loads(body)["ok"] is False
    assert TOKEN not in caplog.text


# --- read-only ---------------------------------------------------------------

def _dump(db: str) -> list[str]:
    with sqlite3.connect(db.removeprefix("sqlite:///")) as conn:
        return list(conn.iterdump())


def test_no_request_can_change_the_ledger(site: Site) -> None:
    url = site.serve()
    before = _dump(site.db)
    paths = ["/", "/status", "/healthz", "/metrics", "/calendar.ics",
             f"/delivery/{site.id_of(webdata.CRON)}"]
    for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
        for path in paths:
            status, headers, _ = fetch(url + path, method, body=b"status=sent&id=1")
            assert (status, headers["allow"]) == (405, "GET, HEAD"), (method, path)
    for path in paths:
        status, headers, body = fetch(url + path, "HEAD")
        assert status in (200, 503) and body == b"" and int(headers["content-length"]) > 0
    assert _dump(site.db) == before
    ledger = site.servers[0].app.ledger()
    assert isinstance(ledger, Ledger)
    with pytest.raises(Exception, match="readonly"), ledger.writing() as s:  # the database refuses
        s.execute(update(Delivery).values(status="sent"))
        s.commit()
    assert _dump(site.db) == before


def test_an_older_ledger_is_not_upgraded_by_the_page_which_says_how(tmp_path: Path) -> None:
    old = tmp_path / "old.db"
    shutil.copy(Path(__file__).parent / "data" / "ledger-0.1.0.db", old)
    shutil.copy(webdata.SAMPLE, tmp_path / "jobs.yaml")
    before = old.read_bytes()
    server = WebServer(str(tmp_path / "jobs.yaml"), Settings(db=f"sqlite:///{old}"), "127.0.0.1:0")
    server.start()
    try:
        status, _, body = fetch(server.url + "status")  # the daemon upgrades it when it starts
        assert status == 503 and b"schema version 0001" in body and b"oyez db upgrade" in body
        status, _, body = fetch(server.url + "healthz")
        assert status == 503 and "schema version 0001" in json.loads(body)["reasons"][0]
    finally:
        server.stop()
    with sqlite3.connect(old) as conn:
        tables = {r[0] for r in conn.execute("select name from sqlite_master where type='table'")}
    assert "daemon" not in tables and old.read_bytes() == before


def test_security_headers_on_every_response(site: Site) -> None:
    url = site.serve()
    for path in ("/", "/status", "/healthz", "/metrics", "/nope", "/static/style.css"):
        _, headers, _ = fetch(url + path)
        csp = headers["content-security-policy"]
        assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp, path
        assert "script-src" not in csp and "unsafe-inline" not in csp, path
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"
        assert headers["x-frame-options"] == "DENY"
        if not path.startswith("/static/"):
            assert headers["cache-control"] == "no-store"  # embargoed posts stay out of caches


# --- /healthz and oyez status ----------------------------------------------

def _stale(site: Site) -> None:
    site.now += timedelta(seconds=31)  # the last heartbeat was at NOW


def _invalid(site: Site) -> None:
    Path(site.jobs).write_text("posts: [\n")


def _unhealthy(site: Site) -> None:
    webdata.unhealthy(site.ledger, site.jobs)


def _dry_run_only(site: Site) -> None:
    with site.ledger.writing() as s:
        s.execute(update(DaemonRow).values(dry_run=True))
        s.commit()


def _no_failures(site: Site) -> None:
    pass


@pytest.mark.parametrize(("breakage", "reason"), [
    (_no_failures, None),
    (_stale, "no daemon heartbeat in the last 30 s"),
    (_dry_run_only, "only dry-run daemons are running: nothing is being published"),
    (_invalid, "on disk is invalid (1 problem)"),
    (_unhealthy, "target police-page is unhealthy: its credentials were refused"),
])
def test_healthz_is_200_only_when_all_is_well(site: Site, breakage: Callable[[Site], None],
                                              reason: str | None) -> None:
    url = site.serve()
    status, _, body = fetch(url + "/healthz")
    assert status == 503 and json.loads(body)["reasons"] == [
        "1 delivery failed in the last 24 h", "1 delivery missed in the last 24 h"]
    site.now = webdata.NOW + timedelta(days=1)  # those failures are older than a day now
    with site.ledger.writing() as s:
        s.execute(update(DaemonRow).values(heartbeat_at=site.now))
        s.commit()
    breakage(site)
    status, headers, body = fetch(url + "/healthz")
    answer = json.loads(body)
    assert headers["content-type"] == "application/json"
    assert (status, answer["ok"]) == ((200, True) if reason is None else (503, False))
    assert answer["reasons"] == ([] if reason is None else [reason if "invalid" not in reason
                                                            else f"{site.jobs} {reason}"])
    for d in site.ledger.deliveries(dry_run=False):
        assert d.text[:20] not in body.decode()  # reveals no post text


@pytest.mark.parametrize(("age", "running"), [(0, True), (30, True), (31, False)])
def test_a_daemon_is_running_while_its_heartbeat_is_at_most_30_s_old(age: int, running: bool) -> None:
    now = webdata.NOW
    row = DaemonRow(node="n", host="h", pid=1, version="v", started_at=now,
                    heartbeat_at=now - timedelta(seconds=age))
    assert report.alive(row, now) is running


def test_oyez_status_exits_non_zero_when_something_needs_attention(tmp_path: Path) -> None:
    jobs, db = webdata.sample_files(tmp_path)
    ledger = Ledger(db)
    now = datetime.now(UTC)
    webdata.running(ledger, jobs, now, heartbeat=now + timedelta(seconds=30))  # holds for a minute

    def status() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "scheduler", "status", "-c", jobs, "--db", db],
                              cwd=tmp_path, capture_output=True, text=True, timeout=60,
                              env={"PATH": "/usr/bin:/bin"})

    result = status()
    assert (result.returncode, result.stdout.splitlines()[-1]) == (0, "all is well"), result.stdout
    assert "daemon: running: web1:4242" in result.stdout
    with ledger.writing() as s:
        s.execute(update(DaemonRow).values(heartbeat_at=now - timedelta(minutes=5)))
        s.commit()
    result = status()
    assert result.returncode == 1
    assert "daemon: STALE" in result.stdout and "web1:4242" in result.stdout
    assert "needs attention: no daemon heartbeat in the last 30 s" in result.stdout
    ledger.engine.dispose()


# --- /metrics --------------------------------------------------------------

def test_metrics_parse_back_and_match_the_ledger(site: Site) -> None:
    with site.ledger.writing() as s:  # dry runs are not counted
        s.add(Delivery(key="post:x:police-page", dry_run=True, job_id="x", part="post",
                       target="police-page", tz="UTC", due_at=site.now, deadline=site.now,
                       status="sent", text="dry", created_at=site.now, updated_at=site.now))
        s.commit()
    status, headers, body = fetch(site.serve() + "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain; version=")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(body.decode()) for s in family.samples}

    def metric(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    rows = site.ledger.deliveries(dry_run=False)
    for (target, state), n in Counter((d.target, d.status) for d in rows).items():
        assert metric("oyez_deliveries", target=target, status=state) == n
    assert sum(v for (name, _), v in samples.items() if name == "oyez_deliveries") == len(rows)
    attempts = [a for d in rows if d.id is not None for a in site.ledger.attempts(d.id)]
    for outcome, n in Counter(a.outcome for a in attempts).items():
        assert metric("oyez_attempts_total", outcome=outcome) == n
    assert metric("oyez_retries_total") == sum(a.number > 1 for a in attempts) == 1
    sent = [d.lateness_ms / 1000 for d in rows if d.status == "sent" and d.lateness_ms is not None]
    assert metric("oyez_lateness_seconds_count") == len(sent) == 1
    assert metric("oyez_lateness_seconds_sum") == pytest.approx(sum(sent))
    assert metric("oyez_lateness_seconds_bucket", le="60.0") == 0
    assert metric("oyez_lateness_seconds_bucket", le="300.0") == 1
    upcoming = min(d.due_at for d in rows if d.status in ("pending", "retry"))
    assert metric("oyez_next_post_seconds") == (upcoming - site.now).total_seconds()
    assert metric("oyez_config_valid") == 1
    assert metric("oyez_target_healthy", target="police-page") == 1
    assert metric("oyez_reloads_total", result="ok") == 1
    assert metric("oyez_daemons_running") == 1
    webdata.unhealthy(site.ledger, site.jobs)
    Path(site.jobs).write_text("posts: [\n")
    again = fetch(site.servers[0].url + "metrics")[2].decode()
    assert "oyez_config_valid 0.0" in again
    assert 'oyez_target_healthy{target="police-page"} 0.0' in again


# --- the calendar feed -----------------------------------------------------

def _export(tmp_path: Path, jobs: str, db: str) -> dict[str, datetime]:
    """`oyez export-ics` for January 2027, as {UID: start}."""
    result = subprocess.run([sys.executable, "-m", "scheduler", "export-ics", "-c", jobs, "--db", db,
                             "--from", "2027-01-01 00:00", "--until", "2027-02-01 00:00"], cwd=tmp_path,
                            capture_output=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    events = Calendar.from_ical(result.stdout).walk("VEVENT")
    uids = [str(e["UID"]) for e in events]
    assert len(uids) == len(set(uids))
    return {str(e["UID"]): e.decoded("DTSTART") for e in events}


def test_calendar_keeps_its_uids_when_a_live_event_moves(site: Site, tmp_path: Path) -> None:
    url = site.serve()
    before = _export(tmp_path, site.jobs, site.db)
    live = {uid for uid in before if uid.startswith("live:")}
    assert live == {f"live:hate-crime-live-chat:{part}:police-page@oyez"
                    for part in ("reminder-2d", "reminder-1h", "start", "end")}
    assert "post:live-chat-announce:police-page@oyez" in before
    assert "post:old-appeal:police-page@oyez" not in before  # cancelled: left out
    status, headers, body = fetch(url + "/calendar.ics")
    assert status == 200 and headers["content-type"] == "text/calendar; charset=utf-8"
    assert {str(e["UID"]) for e in Calendar.from_ical(body).walk("VEVENT")} >= set(before)

    # the event moves a week on; the daemon reloads: old pending posts cancelled, new ones added
    Path(site.jobs).write_text(Path(site.jobs).read_text().replace("2027-01-14 1", "2027-01-21 1"))
    cfg = config.load(site.jobs, strict_env=False)
    start, end = site.now - timedelta(days=3), site.now + timedelta(days=30)
    site.ledger.sync(plan.expand(cfg, start, end), end, dry_run=False, now=site.now)
    after = _export(tmp_path, site.jobs, site.db)
    assert {uid for uid in after if uid.startswith("live:")} == live | {f"{webdata.REMINDER}@oyez"}
    for uid in live:  # the same entries, a week on: a subscribed calendar moves them
        assert after[uid] - before[uid] == timedelta(days=7), uid
    # the old two-day reminder's outcome (missed) stays, under its full key: the new one, still
    # to go out, has taken the stable UID
    stable = "live:hate-crime-live-chat:reminder-2d:police-page@oyez"
    assert after[f"{webdata.REMINDER}@oyez"] == before[stable]
    assert after["post:live-chat-announce:police-page@oyez"] == before[
        "post:live-chat-announce:police-page@oyez"]


# --- served by the commands -------------------------------------------------

def _served_url(log: Callable[[], str]) -> str:
    assert wait_until(lambda: "serving the oyez page on http://" in log(), 30), log()
    found = re.search(r"serving the oyez page on (http://\S+/)", log())
    assert found is not None
    return found[1]


def test_oyez_web_serves_until_sigterm(site: Site, tmp_path: Path) -> None:
    log = tmp_path / "web.log"
    with log.open("wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "scheduler", "web", "-c", site.jobs, "--db", site.db,
                                 "--bind", "127.0.0.1:0"], cwd=tmp_path, stderr=err,
                                env={"PATH": "/usr/bin:/bin"})
    try:
        url = _served_url(log.read_text)
        assert fetch(url + "status")[0] == 200
        assert json.loads(fetch(url + "healthz")[2])["ok"] is False
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        assert "stopped serving the page" in log.read_text()
        assert "Traceback" not in log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_oyez_run_http_serves_the_page_from_the_daemon(daemon: DaemonProcess, graph: FakeGraph) -> None:
    due = soon(3)
    daemon.write(targets_yaml(graph) + f"posts:\n  - id: hello\n    at: {due.isoformat()}\n"
                 "    message: Hello from the daemon\n")
    daemon.start("--http", "127.0.0.1:0")
    url = _served_url(daemon.log)
    assert "Hello from the daemon" in fetch(url)[2].decode()
    assert wait_until(lambda: any(d.status == "sent" for d in daemon.deliveries()), 30), daemon.log()
    metrics = fetch(url + "metrics")[2].decode()
    assert 'oyez_deliveries{status="sent",target="page111"} 1.0' in metrics
    assert 'oyez_attempts_total{outcome="sent"} 1.0' in metrics
    status, _, body = fetch(url + "healthz")
    assert status in (200, 503) and "invalid" not in body.decode()
    assert daemon.stop() == 0
    assert "Traceback" not in daemon.log()


def test_oyez_run_http_refuses_a_public_address_without_the_token(daemon: DaemonProcess,
                                                                 graph: FakeGraph) -> None:
    daemon.write(targets_yaml(graph) + "posts: []\n")
    daemon.start("--http", "0.0.0.0:0")
    assert daemon.proc is not None and daemon.proc.wait(30) == 1
    assert "without OYEZ_WEB_TOKEN" in daemon.log() and "Traceback" not in daemon.log()
    assert "oyez running" not in daemon.log()  # the daemon never started

