"""Mastodon, Bluesky and webhooks end to end: the real daemon against fakes of each service.

Crashes at any moment plus network faults end with every post exactly once, by the
networks' own idempotency (Idempotency-Key, a fixed record key, webhook-id) rather
than by reading the account's posts back.
"""

from __future__ import annotations

import random
import time
from datetime import timedelta

import pytest
from conftest import (
    BSKY_PASSWORD,
    MASTO_TOKEN,
    SECRET,
    TOKEN,
    DaemonProcess,
    iso,
    posts_yaml,
    soon,
    targets_yaml,
    wait_until,
)
from fakebluesky import FakeBluesky
from fakegraph import FakeGraph
from fakemastodon import FakeMastodon
from fakenet import FakeServer, Fault
from fakewebhook import FakeWebhook
from pydantic import SecretStr
from sqlalchemy import update

from adapters import http as web
from adapters.base import Message
from adapters.mastodon import Mastodon, MastodonSettings
from scheduler.ledger import Delivery, Ledger, _table
from scheduler.plan import Occurrence

FIXTURES = {"mastodon": "masto", "bluesky": "bsky", "webhook": "hook"}


def network_targets(masto: FakeMastodon | None = None, bsky: FakeBluesky | None = None,
                    hook: FakeWebhook | None = None) -> str:
    """Target entries (no `targets:` line) named mastodon, bluesky and webhook."""
    lines = []
    if masto:
        lines += ["  mastodon:", "    adapter: mastodon", f"    instance_url: {masto.url}",
                  "    access_token: ${MASTO_TOKEN}"]
    if bsky:
        lines += ["  bluesky:", "    adapter: bluesky", "    handle: police.example.org",
                  "    app_password: ${BSKY_PASSWORD}", f"    service_url: {bsky.url}"]
    if hook:
        lines += ["  webhook:", "    adapter: webhook", f"    url: {hook.url}/hooks/oyez",
                  "    secret: ${HOOK_SECRET}"]
    return "\n".join(lines) + "\n"


def texts(fake: FakeServer) -> list[str]:
    got: list[str] = fake.texts()  # type: ignore[attr-defined]
    return got


def sent(daemon: DaemonProcess) -> int:
    return sum(d.status == "sent" for d in daemon.deliveries())


@pytest.mark.parametrize("network", list(FIXTURES))
def test_sigkill_and_faults_every_post_exactly_once(network: str, request: pytest.FixtureRequest,
                                                     daemon: DaemonProcess) -> None:
    fake: FakeServer = request.getfixturevalue(FIXTURES[network])
    seed = random.randrange(1_000_000)
    rng = random.Random(seed)
    fake.fail_randomly(0.35, [Fault.timeout(0.6, create=True),  # widens the in-flight window
                              Fault.timeout(3, create=True), Fault.http_500(create=True),
                              Fault.http_500(), Fault.drop(create=True)])
    start = soon(3)
    daemon.write("targets:\n" + network_targets(**{FIXTURES[network]: fake})  # type: ignore[arg-type]
                 + posts_yaml(20, start, 0.5, targets=(network,)))
    env = {"OYEZ_MAX_ATTEMPTS": "15"}
    daemon.start(env=env)
    assert daemon.wait_log("oyez running", 20)
    time.sleep(max(0.0, (start - soon(0)).total_seconds()) + rng.uniform(0.5, 9.5))
    daemon.kill()  # at a random moment: between claim and call, mid-call, mid-record ...
    before = len(texts(fake))
    daemon.start(env=env)
    assert wait_until(lambda: sent(daemon) == 20, 90), (seed, [d.status for d in daemon.deliveries()])
    assert daemon.stop() == 0
    got = texts(fake)
    assert sorted(got) == sorted(f"p post number {i}" for i in range(20)), seed
    assert len(got) == len(set(got)), f"duplicate posts (seed {seed})"
    assert before > 0, seed
    assert sum(fake.faulty(r) for r in fake.received) > 20, seed  # faults did force retries
    # exactly once without reading the account back: no listing, no source lookups
    assert [r.path for r in fake.received if r.method == "GET" and "statuses" in r.path] == []
    assert fake.requests_to("listRecords") == [] and fake.errors == []
    if isinstance(fake, FakeWebhook):
        assert set(fake.events) == {d.key for d in daemon.deliveries()}
    log = daemon.log()
    assert MASTO_TOKEN not in log and BSKY_PASSWORD not in log and SECRET not in log


def test_live_event_fans_out_to_every_network(graph: FakeGraph, masto: FakeMastodon,
                                              bsky: FakeBluesky, hook: FakeWebhook,
                                              daemon: DaemonProcess) -> None:
    starts, ends = soon(5), soon(8)
    daemon.write(targets_yaml(graph, "111") + network_targets(masto, bsky, hook) + f"""
live_events:
  - id: chat
    title: Live chat on hate crime
    starts: {iso(starts)}
    ends: {iso(ends)}
    link: https://example.org/chat
    targets: [page111, mastodon, bluesky, webhook]
    on_start: "We're live now: {{title}}. Ask your questions."
    on_end: "Thanks for joining {{title}}."
""")
    check = daemon.cli("check", "-c", str(daemon.jobs), db=False)
    rows = {line.split()[0]: line.split(None, 2) for line in check.stdout.splitlines()[1:]}  # a table
    assert {name: state for name, (_, state, _) in rows.items()} == dict.fromkeys(
        ["bluesky", "mastodon", "page111", "webhook"], "ok")
    assert rows["bluesky"][2].startswith("@police.example.org (" + bsky.did("police.example.org") + ")")
    assert rows["mastodon"][2].startswith("@police@127.0.0.1 (statuses up to 500 characters)")
    assert rows["page111"][2].startswith("Fake Page 111")
    assert rows["webhook"][2].startswith(f"webhook {hook.url}/hooks/oyez accepted a signed ping (HTTP 204)")
    assert daemon.cli("validate", "-c", str(daemon.jobs), db=False).returncode == 0
    daemon.start()
    live, thanks = "We're live now: Live chat on hate crime. Ask your questions.", \
        "Thanks for joining Live chat on hate crime."
    assert wait_until(lambda: sent(daemon) == 8, 30), [(d.key, d.status) for d in daemon.deliveries()]
    assert daemon.stop() == 0
    assert [p.message for p in graph.posts] == [live, thanks]
    assert masto.texts() == [f"{live}\n\nhttps://example.org/chat", f"{thanks}\n\nhttps://example.org/chat"]
    records = sorted(bsky.records.values(), key=lambda r: r["createdAt"])
    assert [r["text"] for r in records] == [live, thanks]
    assert records[0]["embed"]["external"] == {"uri": "https://example.org/chat",
                                               "title": "Live chat on hate crime", "description": ""}
    events = [e for e in hook.events.values() if e["type"] == "post.published"]
    assert [e["data"]["text"] for e in events] == [live, thanks]
    assert [e["data"]["part"] for e in events] == ["start", "end"]
    assert events[0]["data"]["event"]["title"] == "Live chat on hate crime"
    assert events[0]["data"]["event"]["starts"] == starts.strftime("%Y-%m-%dT%H:%M:%SZ")
    log = daemon.log() + check.stdout + check.stderr
    assert all(secret not in log for secret in (TOKEN, MASTO_TOKEN, BSKY_PASSWORD, SECRET))


def test_mastodon_past_the_idempotency_window_looks_before_resending(masto: FakeMastodon,
                                                                     daemon: DaemonProcess) -> None:
    """An attempt with unknown outcome two hours ago: the server forgot its key, so oyez compares
    the account's statuses (by source text) instead of trusting a resend."""
    masto.idempotency_ttl = 0  # as if the hour had passed
    due = soon(-2 * 3600 - 60)
    occ = Occurrence(key="post:late:mastodon", job_id="late", part="post", target="mastodon", due=due,
                     deadline=due + timedelta(hours=3), text="Went out before the crash", link=None,
                     image=None, draft=False, tz_name="UTC")
    ledger = Ledger(daemon.db)
    ledger.sync([occ], soon(86400), dry_run=False, now=due)
    with ledger.transaction() as conn:
        conn.execute(update(_table(Delivery)).values(
            status="retry", uncertain=True, attempts=1, first_attempt_at=due + timedelta(seconds=1)))
    ledger.engine.dispose()
    masto_adapter = Mastodon(MastodonSettings(instance_url=masto.url, access_token=SecretStr(MASTO_TOKEN)),
                             web.session())
    posted = masto_adapter.publish(Message(occ.text, key=occ.key))  # the attempt that did go out
    daemon.write("targets:\n" + network_targets(masto=masto) + f"""posts:
  - id: late
    at: {iso(due)}
    grace: 3h
    message: {occ.text}
""")
    daemon.start()
    assert wait_until(lambda: sent(daemon) == 1, 20), daemon.log()
    assert daemon.stop() == 0
    [row] = daemon.deliveries()
    assert row.remote_id == posted.remote_id and masto.texts() == [occ.text]
    assert masto.requests_to(f"/statuses/{posted.remote_id}/source")
