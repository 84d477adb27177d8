"""Defects found under fault injection (issue 16): each runs the real daemon against the fake."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from conftest import DaemonProcess, iso, posts_yaml, soon, targets_yaml, wait_until
from fakegraph import FakeGraph, Fault

from scheduler.ledger import Ledger


def post(job_id: str, due: datetime, message: str, **extra: str) -> str:
    lines = [f"  - id: {job_id}", f"    at: {iso(due)}", f"    message: {message}"]
    return "\n".join(lines + [f"    {k}: {v}" for k, v in extra.items()]) + "\n"


def rows(daemon: DaemonProcess) -> dict[str, tuple[str, str | None]]:
    return {d.job_id: (d.status, d.remote_id) for d in daemon.deliveries()}


@contextlib.contextmanager
def write_lock(db_path: Path) -> Iterator[None]:
    """Hold the SQLite write lock, as another writer (a backup, a second tool) would."""
    conn = sqlite3.connect(db_path, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield
    finally:
        conn.execute("ROLLBACK")
        conn.close()


def test_an_edit_saved_while_the_ledger_is_locked_is_applied_once_it_is_free(
        graph: FakeGraph, daemon: DaemonProcess) -> None:
    head = targets_yaml(graph, "111") + "posts:\n"
    due = soon(14)
    daemon.write(head + post("changed", due, "old text") + post("removed", due, "must not go out"))
    daemon.start(env={"OYEZ_DB_BUSY_SECONDS": "0.5"})
    assert daemon.wait_log("oyez running")
    with write_lock(daemon.db_path):
        daemon.write(head + post("changed", due, "new text") + post("added", due, "added meanwhile"))
        assert daemon.wait_log("NOT applied, still running the last good schedule", timeout=20)
        status = daemon.cli("status", "-c", str(daemon.jobs), check=False).stdout
        assert "has not been loaded" in status and "is the running schedule" not in status
    assert daemon.wait_log("reload jobs.yaml: 1 added, 1 changed, 1 cancelled", timeout=20)
    posts = graph.wait_for_posts(2, timeout=30)
    assert wait_until(lambda: rows(daemon).get("added", ("",))[0] == "sent", 10)
    assert daemon.stop() == 0
    assert sorted(p.message for p in posts) == ["added meanwhile", "new text"]
    assert rows(daemon)["removed"][0] == "cancelled"
    assert "is the running schedule" in daemon.cli("status", "-c", str(daemon.jobs), check=False).stdout


def _mount_tmpfs(where: Path, size: str) -> bool:
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True, check=False)
    return done.returncode == 0


def test_an_edit_saved_while_the_disk_is_full_is_applied_once_there_is_room(
        graph: FakeGraph, daemon: DaemonProcess, tmp_path: Path) -> None:
    disk = tmp_path / "small-disk"
    if not _mount_tmpfs(disk, "4m"):
        pytest.skip("cannot mount a small tmpfs here (needs root and CAP_SYS_ADMIN): "
                    "the full-disk case is covered by the held-lock test's code path")
    try:
        daemon.db_path, daemon.db = disk / "oyez.db", f"sqlite:///{disk / 'oyez.db'}"
        head = targets_yaml(graph, "111") + "posts:\n"
        due = soon(15)
        daemon.write(head + post("changed", due, "old text") + post("removed", due, "not this"))
        daemon.start()
        assert daemon.wait_log("start jobs.yaml")
        filler = disk / "filler"
        with open(filler, "wb", buffering=0) as f, contextlib.suppress(OSError):
            while True:  # unbuffered: nothing is left to flush (and fail) on close
                f.write(b"\0" * 65536)
        big = "x" * 3000  # enough new rows that the write cannot fit in what is left
        daemon.write(head + post("changed", due, "new text")
                     + "".join(post(f"n{i}", soon(3600 + i), f"{big} {i}") for i in range(40)))
        assert daemon.wait_log("NOT applied, still running the last good schedule", timeout=20)
        filler.unlink()
        assert daemon.wait_log("40 added, 1 changed, 1 cancelled", timeout=20)
        [sent] = graph.wait_for_posts(1, timeout=30)
        assert sent.message == "new text"
        assert daemon.stop() == 0
        assert rows(daemon)["removed"][0] == "cancelled"
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.kill()
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_repost_under_a_new_id_is_published_not_matched_to_the_old_post(
        graph: FakeGraph, daemon: DaemonProcess) -> None:
    head = targets_yaml(graph, "111") + "posts:\n"
    daemon.write(head + post("first", soon(3), "Same words again"))
    daemon.start()
    graph.wait_for_posts(1, timeout=15)
    assert wait_until(lambda: rows(daemon).get("first", ("",))[0] == "sent", 10)
    graph.fail_next(Fault.http_500(create=False))  # ambiguous, but nothing was created
    daemon.write(head + post("first", soon(-5), "Same words again")
                 + post("again", soon(3), "Same words again"))
    posts = graph.wait_for_posts(2, timeout=20)
    assert wait_until(lambda: rows(daemon).get("again", ("",))[0] == "sent", 10)
    assert daemon.stop() == 0
    assert [p.message for p in posts] == ["Same words again"] * 2
    got = rows(daemon)
    assert got["again"][1] == posts[1].id != got["first"][1] == posts[0].id


def test_an_ambiguous_failure_in_a_burst_of_150_is_found_by_paging_back(
        graph: FakeGraph, daemon: DaemonProcess) -> None:
    graph.fail_next(Fault.none(), Fault.none(), Fault.http_500(create=True))  # the 3rd is created
    daemon.write(targets_yaml(graph, "111") + posts_yaml(150, soon(4), 0))
    daemon.start()
    assert wait_until(lambda: sum(s == "sent" for s, _ in rows(daemon).values()) == 150, 60)
    assert daemon.stop() == 0
    messages = [p.message for p in graph.posts]
    assert len(messages) == 150 == len(set(messages)), "a post was published twice"
    listings = [r for r in graph.received if r.method == "GET" and "published_posts" in r.path]
    assert any("after" in r.query for r in listings), "the check never read a second page"
    third = next(d for d in daemon.deliveries() if d.job_id == "p2")
    assert third.remote_id == next(p.id for p in graph.posts if p.message == "p post number 2")


@pytest.mark.parametrize("created", [True, False], ids=["created", "not-created"])
def test_a_removed_post_whose_attempt_may_have_published_is_checked_before_it_is_cancelled(
        graph: FakeGraph, daemon: DaemonProcess, created: bool) -> None:
    head = targets_yaml(graph, "111") + "posts:\n"
    graph.fail_next(Fault.http_500(create=created))
    daemon.write(head + post("doomed", soon(3), "About to be withdrawn") + post("other", soon(600), "x"))
    daemon.start(env={"OYEZ_RETRY_BASE_SECONDS": "60"})  # the retry would come long after the edit
    assert wait_until(lambda: rows(daemon).get("doomed", ("",))[0] == "retry", 15)
    daemon.write(head + post("other", soon(600), "x"))
    want = "sent" if created else "cancelled"
    assert wait_until(lambda: rows(daemon)["doomed"][0] == want, 15), rows(daemon)
    assert daemon.stop() == 0
    assert len(graph.posts) == int(created)
    if created:
        assert rows(daemon)["doomed"][1] == graph.posts[0].id
    assert "may have published it: checking page111" in daemon.log()


def test_a_deleted_ledger_stops_sending_and_says_so(graph: FakeGraph, daemon: DaemonProcess) -> None:
    daemon.write(targets_yaml(graph, "111") + posts_yaml(4, soon(3), 2.5))
    daemon.start()
    graph.wait_for_posts(1, timeout=15)
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{daemon.db_path}{suffix}")
    assert daemon.wait_log("was deleted: NOTHING IS BEING SENT", timeout=10)
    assert wait_until(lambda: len(graph.posts) > 1, 10) is False  # past every post's time
    assert daemon.stop() == 0
    assert "CRITICAL" in daemon.log()


def test_a_cron_rule_added_while_running_does_not_report_its_past_as_missed(
        graph: FakeGraph, daemon: DaemonProcess) -> None:
    head = targets_yaml(graph, "111") + "posts:\n"
    later = post("later", soon(3600), "later")
    daemon.write(head + later)
    daemon.start()
    assert daemon.wait_log("start jobs.yaml")
    daemon.write(head + later
                 + '  - id: minutely\n    cron: "* * * * *"\n    message: every minute\n')
    assert daemon.wait_log("minutely is new:", timeout=15)
    assert daemon.wait_log("reload jobs.yaml", timeout=5)
    assert daemon.stop() == 0
    log = daemon.log()
    assert " ERROR " not in log and "missed cron:" not in log and graph.posts == []
    assert not [d for d in daemon.deliveries() if d.job_id == "minutely" and d.status == "missed"]


def test_a_read_only_ledger_is_refused_with_the_file_named(daemon: DaemonProcess, graph: FakeGraph) -> None:
    Ledger(daemon.db).engine.dispose()  # an existing ledger ...
    daemon.write(targets_yaml(graph, "111") + "posts: []\n")
    read_only = f"sqlite:///file:{daemon.db_path}?mode=ro&uri=true"  # ... this process cannot write
    result = subprocess.run([sys.executable, "-m", "scheduler", "run", "-c", str(daemon.jobs),
                             "--db", read_only], cwd=daemon.workdir, env=daemon.env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "cannot write the ledger" in result.stderr and "readonly database" in result.stderr


def test_a_missing_jobs_file_is_said_once_and_again_when_it_is_back(
        graph: FakeGraph, daemon: DaemonProcess) -> None:
    good = targets_yaml(graph, "111") + "posts:\n" + post("later", soon(3600), "later")
    daemon.write(good)
    daemon.start()
    assert daemon.wait_log("start jobs.yaml")
    daemon.jobs.unlink()
    assert daemon.wait_log("cannot read (No such file or directory)", timeout=10)
    status = daemon.cli("status", "-c", str(daemon.jobs), check=False).stdout
    assert "is missing" in status
    wait_until(lambda: False, 7)  # more than one content re-check (every 5 s) goes by
    daemon.write(good + post("new", soon(3600), "new"))
    assert daemon.wait_log("is readable again", timeout=10)
    assert daemon.wait_log("reload jobs.yaml: 1 added", timeout=10)
    assert daemon.stop() == 0
    assert daemon.log().count("cannot read") == 1


def test_a_cron_heavy_file_keeps_a_short_window_and_reloads_never_delay_a_due_post(
        graph: FakeGraph, daemon: DaemonProcess) -> None:
    rules = "".join(f'  - id: every-minute-{i}\n    cron: "* * * * *"\n    message: tick {i}\n'
                    f"    targets: [page111, page222]\n    draft: false\n" for i in range(5))
    due = soon(10)
    head = targets_yaml(graph, "111", "222") + "posts:\n" + post("punctual", due, "on time",
                                                               targets="[page111]") + rules
    daemon.write(head)
    daemon.start()
    assert daemon.wait_log("oyez running", timeout=60)
    ticks = [d for d in daemon.deliveries() if d.job_id.startswith("every-minute")]
    assert 0 < len(ticks) <= 10 * 130, len(ticks)  # about 120 fires per rule and target, not 10,080
    edits = 0
    while soon(0) < due + timedelta(seconds=3):  # save a new version every 0.3 s
        edits += 1
        daemon.write(head + f"# edit {edits}\n")
        wait_until(lambda: False, 0.3)
    assert wait_until(lambda: rows(daemon).get("punctual", ("",))[0] == "sent", 20)
    assert daemon.stop() == 0
    [sent] = [d for d in daemon.deliveries() if d.job_id == "punctual"]
    assert sent.lateness_ms is not None and sent.lateness_ms < 1000, sent.lateness_ms
    assert daemon.log().count("reload jobs.yaml") >= 5
