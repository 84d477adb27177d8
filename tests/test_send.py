"""`oyez send ID`: now, through the ledger's claim, and never again at its scheduled time."""

from __future__ import annotations

import time

from conftest import DaemonProcess, iso, soon, targets_yaml, wait_until
from fakegraph import FakeGraph, Fault
from receivers import JsonReceiver


def test_send_now_then_the_running_daemon_does_not_send_it_at_its_time(graph: FakeGraph,
                                                                      daemon: DaemonProcess) -> None:
    due = soon(15)  # far enough that `oyez send` beats it on a slow machine too
    daemon.write(targets_yaml(graph, "111") + f"posts:\n  - id: fix\n    at: {iso(due)}\n"
                 "    message: Correction, the chat starts at 7pm\n")
    daemon.start()
    assert daemon.wait_log("oyez running")
    result = daemon.cli("send", "fix", "-c", "jobs.yaml")
    assert result.stdout.startswith("post:fix:page111: sent: 111_"), result.stdout + result.stderr
    [post] = graph.posts
    assert post.created_time < due.timestamp() - 1
    time.sleep(max(0.0, due.timestamp() - time.time()) + 2.5)  # its time and two sweeps pass
    assert len(graph.posts) == 1
    [row] = daemon.deliveries()
    assert row.status == "sent" and row.remote_id == post.id and row.attempts == 1
    assert row.due_at == due.replace(microsecond=due.microsecond // 1000 * 1000)  # as planned
    assert row.sent_at is not None and row.sent_at < row.due_at
    daemon.write(daemon.jobs.read_text() + "# touched\n")  # a reload sees nothing moved
    assert wait_until(lambda: daemon.log().count("reload jobs.yaml: 0 added, 0 changed") == 1, 20)
    assert "already sent; its new time is ignored" not in daemon.log()
    again = daemon.cli("send", "fix", "-c", "jobs.yaml", check=False)
    assert again.returncode == 1 and "already sent" in again.stderr and "new id" in again.stderr
    assert len(graph.posts) == 1
    assert daemon.stop() == 0


def test_send_cron_post_sends_its_next_occurrence(graph: FakeGraph, daemon: DaemonProcess) -> None:
    daemon.write(targets_yaml(graph, "111", "222") + "posts:\n  - id: tip\n    cron: \"0 9 * * MON\"\n"
                 "    message: Tip of the week\n    targets: [page111, page222]\n")
    result = daemon.cli("send", "tip", "--target", "page222", "-c", "jobs.yaml")
    [line] = result.stdout.splitlines()
    assert line.startswith("cron:tip:page222:") and ": sent: 222_" in line
    assert [p.page_id for p in graph.posts] == ["222"]
    [row] = daemon.deliveries()
    assert row.key.endswith("T09:00:00Z") and row.status == "sent"  # the next Monday's, sent now


def test_send_failure_is_recorded_and_alerted_by_the_running_daemon(graph: FakeGraph,
                                                                    daemon: DaemonProcess) -> None:
    with JsonReceiver() as hook:
        graph.fail_next(Fault.graph_error(368))
        daemon.env.update(HOOK_URL=hook.url, OYEZ_ALERT_BATCH_SECONDS="0.2")
        daemon.write(targets_yaml(graph, "111") + "alerts: [\"${HOOK_URL}\"]\nposts:\n"
                     "  - {id: later, at: '2030-01-01 09:00', message: Blocked}\n")
        daemon.start()
        assert daemon.wait_log("oyez running")
        result = daemon.cli("send", "later", "-c", "jobs.yaml", check=False)
        assert result.returncode == 1 and "post:later:page111: failed: " in result.stdout
        assert wait_until(lambda: any("[failed:post:later:page111]" in t for t in hook.texts()), 20)
        assert daemon.stop() == 0


def test_send_dry_run_and_bad_input(graph: FakeGraph, daemon: DaemonProcess) -> None:
    daemon.write(targets_yaml(graph, "111") + "posts:\n  - {id: a, at: '2030-01-01 09:00', message: Hi}\n")
    result = daemon.cli("send", "a", "--dry-run", "-c", "jobs.yaml")
    assert "DRY RUN" in result.stdout and "| Hi" in result.stdout and graph.posts == []
    for args, message in [(("nope",), "no post with id 'nope'"),
                          (("a", "--target", "page999"), "does not go to 'page999'")]:
        bad = daemon.cli("send", *args, "-c", "jobs.yaml", check=False)
        assert bad.returncode == 1 and message in bad.stderr and "Traceback" not in bad.stderr
    assert graph.posts == []
