"""Live reload, end to end: staff edit jobs.yaml while the daemon runs."""

from __future__ import annotations

import os
import signal
import time
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from conftest import DaemonProcess, iso, soon, targets_yaml, wait_until
from fakegraph import FakeGraph

from scheduler import config
from scheduler.errors import ConfigError


def post(job_id: str, at: datetime, message: str | None = None) -> str:
    return (f"  - id: {job_id}\n    at: {iso(at)}\n"
            f"    message: {message or job_id + ' message'}\n")


def status_of(daemon: DaemonProcess, job_id: str) -> list[str]:
    return [d.status for d in daemon.deliveries() if d.job_id == job_id]


def test_added_post_goes_out_on_time_and_removed_one_never(graph: FakeGraph, daemon: DaemonProcess) -> None:
    head = targets_yaml(graph, "111") + "posts:\n"
    daemon.write(head + post("stays", soon(60)) + post("removed", soon(8)))
    daemon.start()
    assert daemon.wait_log("start jobs.yaml")
    due = soon(5)
    daemon.write(head + post("stays", soon(60)) + post("added", due, "added while running"))
    [sent] = graph.wait_for_posts(1, timeout=15)
    assert sent.message == "added while running"
    assert 0 <= sent.created_time - due.timestamp() < 1.0
    assert wait_until(lambda: status_of(daemon, "removed") == ["cancelled"], 5)
    time.sleep(4)  # past the removed post's old time
    assert [p.message for p in graph.posts] == ["added while running"]
    reloads = daemon.cli("history", "--reloads").stdout
    assert "+1 added, 1 cancelled" in reloads
    assert daemon.stop() == 0


def test_broken_saves_keep_the_last_good_schedule(graph: FakeGraph, daemon: DaemonProcess) -> None:
    head = targets_yaml(graph, "111") + "posts:\n"
    good = head + "".join(post(f"p{i}", soon(6 + i * 1.5)) for i in range(6))
    broken = [
        head + "  - id: [unclosed\n",
        head + "  - id: p0\n   at: bad indent\n",
        head + "\t- id: tab\n",
        head + post("p0", soon(60)) + post("p0", soon(61)),  # duplicate ids
        head + "  - id: x\n    at: 12\n    message: m\n",  # wrong type
        head + "  - id: x\n    at: 2026-99-01 09:00\n    message: m\n",
        head + "  - id: x\n    at: 2027-01-01 09:00\n    message: [1, 2]\n",
        head + "  - id: x\n    at: 2027-01-01 09:00\n    message: m\n    colour: red\n",
        head + "  - id: x\n    at: 2027-01-01 09:00\n    message: m\n    targets: [nope]\n",
        head + "  - id: x\n    at: 2027-01-01 09:00\n    message: m\n    link: https://[bad/\n",
        good.replace("TOKEN_111", "TOKEN_UNSET"),  # missing env variable
        "",  # emptied mid-save
        "targets: {}\n",
        "posts: []\n",  # no targets
        "- just\n- a list\n",
        good.replace("message:", "mesage:"),
        good.replace("{{", "").replace("posts:", "posts: {"),
    ]
    cut = 0
    while len(broken) < 20:  # files cut short at a byte where they are invalid
        cut += 7
        text = good[: len(good) // 2 + cut]
        try:
            config.parse(text.encode(), env=daemon.env)
        except ConfigError:
            broken.append(text)
    daemon.write(good)
    daemon.start()
    assert daemon.wait_log("start jobs.yaml")
    for n, text in enumerate(broken, 1):
        daemon.write(text)
        assert wait_until(lambda n=n: daemon.log().count("still running the last good schedule") >= n,
                          20), f"broken save {n} was not rejected"
        assert daemon.proc is not None and daemon.proc.poll() is None
    posts = graph.wait_for_posts(6, timeout=20)
    assert sorted(p.message for p in posts) == [f"p{i} message" for i in range(6)]
    result = daemon.cli("status", "-c", str(daemon.jobs), check=False)
    assert result.returncode == 1  # needs attention
    assert "is NOT running: invalid since" in result.stdout
    assert "jobs.yaml on disk is invalid" in result.stdout
    plan = daemon.cli("plan", "-c", str(daemon.jobs), check=False)
    assert plan.returncode == 1 and "is NOT running: invalid since" in plan.stderr
    assert daemon.log().count("still running the last good schedule") == len(broken)
    assert "link: bad URL 'https://[bad/'" in daemon.log() and "Traceback" not in daemon.log()
    assert set(status_of(daemon, "p0") + status_of(daemon, "p5")) == {"sent"}
    daemon.write(good + post("later", soon(4), "the next valid save"))
    assert graph.wait_for_posts(7, timeout=15)[-1].message == "the next valid save"
    assert "is the running schedule" in daemon.cli("status", "-c", str(daemon.jobs), check=False).stdout
    assert daemon.stop() == 0


def test_moving_a_live_event_cancels_old_reminders_and_schedules_new(graph: FakeGraph,
                                                                       daemon: DaemonProcess) -> None:
    starts = soon(3600 * 2 + 5)  # the 2h reminder falls due in 5 s

    def event(start: datetime) -> str:
        return (targets_yaml(graph, "111") + "live_events:\n  - id: chat\n    title: Chat\n"
                f"    starts: {iso(start)}\n    ends: {iso(start + timedelta(hours=1))}\n"
                "    reminders:\n      - before: 2h\n        message: '{title} in 2 hours'\n"
                "      - before: 1h\n        message: '{title} in 1 hour'\n"
                "    on_start: 'Live: {title}'\n")

    daemon.write(event(starts))
    daemon.start()
    [sent] = graph.wait_for_posts(1, timeout=20)
    assert sent.message == "Chat in 2 hours"
    moved = starts + timedelta(days=1)
    diff = daemon.cli("diff", "-c", str(daemon.jobs)).stdout  # same file: nothing to do
    assert diff.strip() == "no changes"
    (daemon.workdir / "candidate.yaml").write_text(event(moved))
    diff = daemon.cli("diff", "-c", str(daemon.workdir / "candidate.yaml")).stdout
    assert diff.count("\n+ ") + diff.startswith("+ ") == 3 and diff.count("(cancelled)") == 2
    daemon.write(event(moved))
    assert daemon.wait_log("reload jobs.yaml: 3 added, 0 changed, 2 cancelled")
    by_key = {d.key: d.status for d in daemon.deliveries()}
    old, new = iso(starts)[:19], iso(moved)[:19]
    assert {k.split(":")[2]: v for k, v in by_key.items() if old in k} == {
        "reminder-2h": "sent", "reminder-1h": "cancelled", "start": "cancelled"}
    assert {k.split(":")[2]: v for k, v in by_key.items() if new in k} == {
        "reminder-2h": "pending", "reminder-1h": "pending", "start": "pending"}
    assert len(graph.posts) == 1
    assert daemon.stop() == 0


def test_text_fix_is_used_and_sighup_reloads(graph: FakeGraph, daemon: DaemonProcess) -> None:
    head = targets_yaml(graph, "111") + "posts:\n"
    due = soon(6)
    daemon.write(head + post("tip", due, "Lokc your car"))
    daemon.start()
    assert daemon.wait_log("start jobs.yaml")
    (daemon.workdir / "jobs.yaml").write_text(head + post("tip", due, "Lock your car"))
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGHUP)
    assert daemon.wait_log("1 changed")
    [sent] = graph.wait_for_posts(1, timeout=15)
    assert sent.message == "Lock your car"
    assert daemon.stop() == 0


def test_moving_a_sent_post_does_not_resend_and_emptying_warns(graph: FakeGraph,
                                                                daemon: DaemonProcess) -> None:
    head = targets_yaml(graph, "111") + "posts:\n"
    daemon.write(head + post("once", soon(3)) + post("later", soon(300)))
    daemon.start()
    graph.wait_for_posts(1, timeout=15)
    assert wait_until(lambda: status_of(daemon, "once") == ["sent"], 5)
    daemon.write(head + post("once", soon(3)) + post("later", soon(300)))
    assert daemon.wait_log("post:once:page111 was already sent; its new time is ignored")
    assert "give it a new id" in daemon.log()
    daemon.write(targets_yaml(graph, "111") + "posts: []\n")
    assert daemon.wait_log("has no posts or live events: 1 pending deliveries cancelled")
    assert status_of(daemon, "later") == ["cancelled"]
    time.sleep(4)
    assert len(graph.posts) == 1
    assert daemon.stop() == 0


def test_same_size_save_with_the_same_mtime_is_still_picked_up(graph: FakeGraph,
                                                                 daemon: DaemonProcess) -> None:
    """Mounted volumes can give two quick saves one mtime; the content is re-checked."""
    head = targets_yaml(graph, "111") + "posts:\n"
    due = soon(12)
    daemon.write(head + post("tip", due, "Lock yuor car"))
    daemon.start()
    assert daemon.wait_log("start jobs.yaml")
    time.sleep(1)  # the daemon has seen this stat
    before = os.stat(daemon.jobs)
    fixed = daemon.jobs.read_text().replace("yuor", "your")
    with open(daemon.jobs, "r+") as f:  # same inode, same size, mtime put back
        f.write(fixed)
    os.utime(daemon.jobs, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert daemon.wait_log("1 changed", timeout=10)
    [sent] = graph.wait_for_posts(1, timeout=20)
    assert sent.message == "Lock your car"
    assert daemon.stop() == 0


def test_a_new_time_zone_moves_the_posts_a_reload_did_not_edit(graph: FakeGraph,
                                                              daemon: DaemonProcess) -> None:
    """A reload takes over the entries whose text did not change, and syncs only the changed
    ones; a new `timezone:` changes what every entry means, so every one is moved."""
    wall = (datetime.now(ZoneInfo("Europe/London")) + timedelta(hours=3)).strftime("%Y-%m-%d %H:%M")
    posts = "".join(f"  - {{id: {i}, at: {wall}, message: {i}}}\n" for i in ("a", "b", "c"))
    head = targets_yaml(graph, "111") + "posts:\n"
    daemon.write("timezone: Europe/London\n" + head + posts)
    daemon.start()
    assert daemon.wait_log("start jobs.yaml")
    due = {d.job_id: d.due_at for d in daemon.deliveries()}
    daemon.write("timezone: Europe/London\n" + head + posts.replace("message: b", "message: b2"))
    assert daemon.wait_log("reload jobs.yaml: 0 added, 1 changed, 0 cancelled")
    daemon.write("timezone: America/New_York\n" + head + posts.replace("message: b", "message: b2"))
    assert daemon.wait_log("reload jobs.yaml: 0 added, 3 changed, 0 cancelled")
    naive = datetime.fromisoformat(wall)
    shift = naive.replace(tzinfo=ZoneInfo("America/New_York")) - \
        naive.replace(tzinfo=ZoneInfo("Europe/London"))
    moved = {d.job_id: d.due_at - due[d.job_id] for d in daemon.deliveries()}
    assert moved == {"a": shift, "b": shift, "c": shift} and shift >= timedelta(hours=4)
    assert daemon.stop() == 0
