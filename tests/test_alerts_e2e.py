"""Alerts, end to end: real daemons, the fake Graph API, a JSON webhook and an SMTP server.

Each incident alerts once when it opens and once when it resolves, at every
channel, across a restart and with two daemons on one database; a channel that
hangs never delays a post.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterator

import pytest
from conftest import TOKEN, TOKEN2, DaemonProcess, iso, soon, targets_yaml, wait_until
from fakegraph import FakeGraph, Fault
from receivers import JsonReceiver, SmtpReceiver

ALERT_ENV = {"OYEZ_ALERT_BATCH_SECONDS": "0.5"}
ROTATED = "EAAB-ROTATED-TOKEN-333"
ALERTS_YAML = "alerts:\n  - ${HOOK_URL}\n  - ${MAIL_URL}\n"


@pytest.fixture
def hook() -> Iterator[JsonReceiver]:
    with JsonReceiver() as receiver:
        yield receiver


@pytest.fixture
def mail() -> Iterator[SmtpReceiver]:
    with SmtpReceiver() as receiver:
        yield receiver


def tagged(texts: list[str], tag: str) -> Counter[str]:
    """How often each incident key appears after `tag` (PROBLEM or RESOLVED) in all messages."""
    return Counter(key for text in texts for key in re.findall(rf"^{tag} \[([^\]]+)\]", text, re.M))


def jobs(graph: FakeGraph, start: float) -> str:
    return targets_yaml(graph, "111", "222") + ALERTS_YAML + f"""posts:
  - id: rejected
    at: {iso(soon(start))}
    message: this one the network refuses for good
    targets: [page111]
  - id: held
    at: {iso(soon(start))}
    message: this one waits for a working token
    targets: [page222]
"""


def test_one_alert_per_incident_across_restart_and_two_daemons_then_resolved(
        graph: FakeGraph, daemon: DaemonProcess, hook: JsonReceiver, mail: SmtpReceiver) -> None:
    graph.set_token("222", ROTATED)  # TOKEN2 in the environment is now refused (code 190)
    graph.fail_next(Fault.graph_error(100), page_id="111")  # permanent
    daemon.env.update(ALERT_ENV, HOOK_URL=hook.url, MAIL_URL=mail.url)
    good = jobs(graph, 4)
    daemon.write(good)
    other = DaemonProcess(daemon.workdir, daemon.env, name="second")
    try:
        daemon.start()
        other.start()
        path = str(daemon.jobs)
        opened = {"unhealthy:page222", "token:page222", "failed:post:rejected:page111"}
        for receiver in (hook, mail):
            assert wait_until(lambda r=receiver: set(tagged(r.texts(), "PROBLEM")) >= opened, 30), \
                (receiver.texts(), daemon.log())

        daemon.stop()  # a restart finds the same incidents open: nothing new to say
        daemon.start()
        assert wait_until(lambda: daemon.log().count("oyez running") == 2, 20)

        daemon.write(good.replace("message: this one waits", "mesage: this one waits"))
        for receiver in (hook, mail):
            assert wait_until(lambda r=receiver: f"reload:{path}" in tagged(r.texts(), "PROBLEM"), 20)
        daemon.write(good + "# fixed\n")
        for receiver in (hook, mail):
            assert wait_until(lambda r=receiver: f"reload:{path}" in tagged(r.texts(), "RESOLVED"), 20)

        assert daemon.stop() == 0 and other.stop() == 0  # the token is fixed in .env, then restart
        daemon.env["TOKEN_222"] = ROTATED
        daemon.start()
        other.start()
        assert wait_until(lambda: len(graph.posts_for("222")) == 1, 20)
        resolved = {f"reload:{path}", "unhealthy:page222", "token:page222"}
        for receiver in (hook, mail):
            assert wait_until(lambda r=receiver: set(tagged(r.texts(), "RESOLVED")) == resolved, 20), \
                receiver.texts()
        time.sleep(3)  # several alert polls by both daemons: nothing may be repeated
    finally:
        for d in (daemon, other):
            if d.proc is not None and d.proc.poll() is None:
                d.stop()
    for receiver in (hook, mail):
        texts = receiver.texts()
        assert tagged(texts, "PROBLEM") == Counter(opened | {f"reload:{path}"}), texts
        assert tagged(texts, "RESOLVED") == Counter(resolved), texts
        everything = "\n".join(texts)
        assert TOKEN not in everything and TOKEN2 not in everything and ROTATED not in everything
    problem_text = "\n".join(hook.texts())
    assert "Graph error 100" in problem_text  # says why the post failed
    assert "jobs.yaml:" in problem_text and "mesage" in problem_text  # the located problem
    assert graph.posts_for("222")[0].message == "this one waits for a working token"


def test_hanging_alert_channel_does_not_delay_a_post(graph: FakeGraph, daemon: DaemonProcess) -> None:
    with JsonReceiver(hang=True) as stuck:
        graph.fail_next(Fault.graph_error(506), page_id="111")
        daemon.env.update(ALERT_ENV, HOOK_URL=stuck.url, OYEZ_ALERT_TIMEOUT_SECONDS="60")
        first, second = soon(3), soon(7)
        daemon.write(targets_yaml(graph, "111") + "alerts: [\"${HOOK_URL}\"]\nposts:\n"
                     f"  - {{id: dup, at: '{iso(first)}', message: refused}}\n"
                     f"  - {{id: next, at: '{iso(second)}', message: on time}}\n")
        daemon.start()
        assert stuck.arrived.wait(20), daemon.log()  # the alert is stuck in the channel ...
        assert wait_until(lambda: len(graph.posts) == 1, 20)  # ... while the next post goes out
        rows = {d.job_id: d for d in daemon.deliveries()}
        assert rows["dup"].status == "failed"
        assert rows["next"].status == "sent" and (rows["next"].lateness_ms or 0) < 1000, rows["next"]
        assert daemon.stop() == 0


def test_expiring_token_missed_post_and_abandoned_send_each_alert(graph: FakeGraph, daemon: DaemonProcess,
                                                                  hook: JsonReceiver) -> None:
    graph.set_token_info("111", expires_at=int(time.time() + 3 * 86400 - 60))
    graph.fail_next(Fault.timeout(30, create=True))  # the first post hangs: killed mid-send
    daemon.env.update(ALERT_ENV, HOOK_URL=hook.url)
    daemon.write(targets_yaml(graph, "111") + "alerts: [\"${HOOK_URL}\"]\nposts:\n"
                 f"  - {{id: late, at: '{iso(soon(-120))}', grace: 1m, message: too late}}\n"
                 f"  - {{id: stuck, at: '{iso(soon(3))}', message: stuck in flight}}\n")
    # a fixed node name, as under systemd; the hanging send must still be in flight when killed
    daemon.start(env={"OYEZ_NODE": "host-a", "OYEZ_HTTP_TIMEOUT": "60"})

    def problems() -> Counter[str]:
        return tagged(hook.texts(), "PROBLEM")

    assert wait_until(lambda: {"token:page111", "missed:post:late:page111"} <= set(problems()), 20), \
        hook.texts()
    assert "expires in 3 days" in "\n".join(hook.texts())
    status = daemon.cli("status", "-c", "jobs.yaml", check=False).stdout  # exit 1: needs attention
    assert re.search(r"^incident token:page111: open since .*, seen 1x, alerted ", status, re.M), status
    assert wait_until(lambda: len(graph.posts) == 1, 20)
    daemon.kill()
    daemon.start(env={"OYEZ_NODE": "host-a"})
    assert wait_until(lambda: "abandoned:post:stuck:page111" in problems(), 60), hook.texts()
    assert wait_until(lambda: [d.status for d in daemon.deliveries()] == ["sent", "missed"], 20)
    assert len(graph.posts) == 1  # found on the page after the restart, not posted again
    assert daemon.stop() == 0
    assert problems() == Counter({"token:page111": 1, "missed:post:late:page111": 1,
                                  "abandoned:post:stuck:page111": 1})
