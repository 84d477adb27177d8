"""Reviewing a jobs.yaml: validate without secrets, plan windows, status, history and diff that tell
the truth in plain words, and a diff that never holds up the daemon (issues 15 and 16)."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from conftest import SAMPLE_ENV as ENV
from conftest import SAMPLE_HEAD as HEAD
from conftest import occurrence
from sqlalchemy import update

from scheduler import cli, config, plan
from scheduler.ledger import Delivery, Ledger

ROOT = Path(__file__).resolve().parent.parent


def oyez(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "scheduler", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=60, env={"PATH": "/usr/bin:/bin", **(env or {})})


def local(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M")


def in_days(days: float) -> datetime:
    """A London wall-clock time `days` from now, on the minute, as aware UTC (London is UTC+0/+1)."""
    return (datetime.now(UTC) + timedelta(days=days)).replace(second=0, microsecond=0)


def at(moment: datetime) -> str:
    return moment.isoformat()


# --- validate ---------------------------------------------------------------------------------------

def test_validate_passes_without_the_secrets_and_strict_requires_them(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "jobs.yaml").write_text(HEAD + "posts: []\n")
    review = oyez("validate", "-c", "m/jobs.yaml", cwd=tmp_path)
    assert review.returncode == 0, review.stderr
    assert review.stderr.splitlines() == [
        "note: m/jobs.yaml:5: environment variable FB_PAGE_ID is not set (needed to send; fine for "
        "a review or a dry run)",
        "note: m/jobs.yaml:6: environment variable FB_PAGE_ACCESS_TOKEN is not set (needed to send; "
        "fine for a review or a dry run)"]
    server = oyez("validate", "--strict", "-c", "m/jobs.yaml", cwd=tmp_path)
    assert server.returncode == 1
    assert server.stderr.startswith("m/jobs.yaml:5: environment variable FB_PAGE_ID is not set")
    assert oyez("validate", "--strict", "-c", "m/jobs.yaml", cwd=tmp_path, env=ENV).returncode == 0


def test_pre_commit_hook_validates_each_file_it_is_given(tmp_path: Path) -> None:
    [hook] = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    assert hook["id"] == "oyez-validate" and hook["pass_filenames"] is True
    assert re.search(hook["files"], "comms/jobs.yaml") and not re.search(hook["files"], "ci.yaml")
    (tmp_path / "good.yaml").write_text(HEAD + "posts: []\n")
    (tmp_path / "bad.yaml").write_text(HEAD + "posts:\n  - id: a\n    message: hi\n")
    command = hook["entry"].split()[1:]  # `oyez validate`, run as python -m scheduler validate
    good = oyez(*command, "good.yaml", "good.yaml", cwd=tmp_path)
    assert good.returncode == 0 and good.stdout.count("good.yaml: OK") == 2
    mixed = oyez(*command, "bad.yaml", "good.yaml", cwd=tmp_path)
    assert mixed.returncode == 1 and "good.yaml: OK" in mixed.stdout
    assert "bad.yaml:8: a post needs exactly one of at: or cron:" in mixed.stderr


def past_post_file(tmp_path: Path) -> Path:
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text(HEAD + "posts:\n  - id: launch\n    at: 2020-10-15 18:00\n    message: hi\n")
    return jobs


def test_a_past_one_off_post_is_a_note_in_validate_plan_and_status(tmp_path: Path) -> None:
    past_post_file(tmp_path)
    note = ("jobs.yaml: post 'launch' at Thu 2020-10-15 18:00 BST is in the past: it will not be "
            "sent (give it a future time, or remove it)")
    assert f"note: {note}" in oyez("validate", cwd=tmp_path, env=ENV).stderr.splitlines()
    assert f"note: {note}" in oyez("plan", cwd=tmp_path, env=ENV).stdout.splitlines()
    Ledger(f"sqlite:///{tmp_path / 'oyez.db'}").engine.dispose()
    assert note in oyez("status", cwd=tmp_path, env=ENV).stdout.splitlines()


def test_a_past_one_off_post_that_was_sent_is_not_a_note(tmp_path: Path) -> None:
    past_post_file(tmp_path)
    ledger = Ledger(f"sqlite:///{tmp_path / 'oyez.db'}")
    due = datetime(2020, 10, 15, 17, tzinfo=UTC)
    ledger.sync([occurrence("post:launch:police-page", due, target="police-page")], due + timedelta(1),
                dry_run=False, now=due)
    with ledger.writing() as s:
        s.execute(update(Delivery).values(status="sent"))
        s.commit()
    ledger.engine.dispose()
    result = oyez("validate", cwd=tmp_path, env=ENV)
    assert result.returncode == 0 and "in the past" not in result.stderr


# --- plan -------------------------------------------------------------------------------------------

def test_plan_window_takes_dates_and_durations(tmp_path: Path) -> None:
    args = ("plan", "-c", str(ROOT / "jobs.yaml"), "--json")
    by_dates = oyez(*args, "--from", "2027-01-12", "--until", "2027-01-14", cwd=tmp_path, env=ENV)
    assert by_dates.returncode == 0, by_dates.stderr
    parts = [r["part"] for r in cli.json.loads(by_dates.stdout)]
    assert parts == ["post", "reminder-2d", "reminder-1h", "start", "end"]  # --until a date: to its end
    by_duration = oyez(*args, "--from", "2027-01-12", "--until", "2d", cwd=tmp_path, env=ENV)
    assert [r["part"] for r in cli.json.loads(by_duration.stdout)] == ["post", "reminder-2d"]
    backwards = oyez("plan", "-c", str(ROOT / "jobs.yaml"), "--from", "2027-01-12", "--until",
                     "2027-01-01", cwd=tmp_path, env=ENV)
    assert backwards.returncode == 1
    assert backwards.stderr == "oyez: --until (2027-01-01) must be after --from (2027-01-12)\n"
    nonsense = oyez("plan", "--from", "soon", "-c", str(ROOT / "jobs.yaml"), cwd=tmp_path, env=ENV)
    assert nonsense.returncode == 1 and "Traceback" not in nonsense.stderr


def test_plan_says_what_lies_beyond_its_window_in_plain_words(tmp_path: Path) -> None:
    result = oyez("plan", "-c", str(ROOT / "jobs.yaml"), "--from", "2026-12-01", "--until", "7d",
                  cwd=tmp_path, env=ENV)
    assert result.returncode == 0, result.stderr
    assert "not yet in ledger" not in result.stdout
    assert "[planned (scheduled when it is 7 days away or less)]" in result.stdout
    # the weekly tip until 2027-03-31 (16 more Mondays), the announcement and 4 live-event posts
    assert ("21 more occurrences after this window, the next Mon 2026-12-14 09:00 GMT "
            "(weekly-safety-tip post); widen it with --until") in result.stdout


def test_beyond_counts_endless_rules_up_to_a_cap() -> None:
    cfg = config.parse((HEAD + "posts:\n  - id: tick\n    cron: '* * * * *'\n    message: hi\n").encode(),
                       env=ENV)
    later = plan.beyond(cfg, datetime(2030, 1, 1, tzinfo=UTC), cap=100)
    assert (later.count, later.capped, later.endless) == (100, True, ("tick",))


# --- options everywhere -----------------------------------------------------------------------------

def test_log_level_is_accepted_after_the_command_too(tmp_path: Path) -> None:
    (tmp_path / "jobs.yaml").write_text(HEAD + "posts: []\n")
    after = oyez("plan", "--log-level", "ERROR", cwd=tmp_path)
    assert after.returncode == 0 and "WARNING" not in after.stderr  # the unset-variable notes are gone
    assert "WARNING" in oyez("plan", cwd=tmp_path).stderr
    assert oyez("--log-level", "ERROR", "plan", cwd=tmp_path).stderr == ""


def test_every_command_that_reads_the_ledger_takes_db() -> None:
    [sub] = [a for a in cli._parser()._actions if a.dest == "command"]
    for name in ("validate", "plan", "run", "history", "status", "diff"):
        assert "--db" in sub.choices[name]._option_string_actions, name  # type: ignore[attr-defined]


def test_huge_settings_are_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "jobs.yaml").write_text(HEAD + "posts: []\n")
    for command in ("run", "diff"):
        result = oyez(command, cwd=tmp_path, env={**ENV, "OYEZ_HORIZON_DAYS": "1e300"})
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        assert "OYEZ_HORIZON_DAYS: Input should be less than or equal to 366 (got '1e300')" in result.stderr


@pytest.mark.parametrize("command", ["validate", "plan", "diff", "run"])
def test_an_unclosed_ipv6_bracket_is_a_located_error_everywhere(tmp_path: Path, command: str) -> None:
    (tmp_path / "jobs.yaml").write_text(HEAD + "posts:\n  - id: a\n    at: 2030-01-01 09:00\n"
                                               "    message: hi\n    link: https://[bad/\n")
    result = oyez(command, "--dry-run" if command == "run" else "--log-level=INFO", cwd=tmp_path, env=ENV)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "jobs.yaml:11: link: bad URL 'https://[bad/'" in result.stderr


# --- status and history -----------------------------------------------------------------------------

def test_history_and_status_show_dry_run_rows_marked(tmp_path: Path) -> None:
    (tmp_path / "jobs.yaml").write_text(HEAD + "posts: []\n")
    ledger = Ledger(f"sqlite:///{tmp_path / 'oyez.db'}")
    due = datetime(2030, 1, 1, 9, tzinfo=UTC)
    ledger.sync([occurrence("post:a:police-page", due, "Lock your car", target="police-page")],
                due + timedelta(days=1), dry_run=True, now=due)
    ledger.engine.dispose()
    history = oyez("history", cwd=tmp_path).stdout
    assert re.search(r"2030-01-01T09:00:00 +pending \(dry run\) +0  a post", history), history
    status = oyez("status", cwd=tmp_path).stdout
    assert "deliveries: none" in status and "dry-run deliveries (printed, not posted): 1 pending" in status
    only_dry = oyez("history", "--dry-run", "--json", cwd=tmp_path).stdout
    assert [r["dry_run"] for r in cli.json.loads(only_dry)] == [True]


def test_status_does_not_claim_a_daemon_will_pick_up_changes_and_shows_no_digests(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text(HEAD + "posts: []\n")
    ledger = Ledger(f"sqlite:///{tmp_path / 'oyez.db'}")
    from scheduler.ledger import Reload

    ledger.record_reload(Reload(at=datetime(2026, 11, 1, tzinfo=UTC), node="vm:1", path="jobs.yaml",
                                digest="ab" * 32, ok=True))
    ledger.engine.dispose()
    status = oyez("status", cwd=tmp_path).stdout
    assert "picks up changes" not in status and "abab" not in status
    assert ("on disk: jobs.yaml differs and has not been loaded: a running daemon loads a saved file "
            "within seconds; otherwise `oyez run` will") in status
    assert "abab" not in oyez("history", "--reloads", cwd=tmp_path).stdout


# --- diff -------------------------------------------------------------------------------------------

def posts_file(tip: str, chat_day: datetime, *, extra: str = "") -> str:
    return HEAD + f"""\
posts:
  - id: tip
    at: {at(in_days(2))}
    message: {tip}
{extra}live_events:
  - id: chat
    title: Live chat
    starts: {at(chat_day)}
    ends: {at(chat_day + timedelta(hours=1))}
    on_start: We're live
"""


def run_once(tmp_path: Path, text: str, *, dry_run: bool = False) -> None:
    """What a daemon's start does to the ledger: sync the horizon."""
    cfg = config.parse(text.encode(), env=ENV, strict_env=False)
    now = datetime.now(UTC)
    start, end = plan.ledger_window(cfg, now, timedelta(days=7))
    ledger = Ledger(f"sqlite:///{tmp_path / 'oyez.db'}")
    ledger.sync(plan.expand(cfg, start, end), end, dry_run=dry_run, now=now)
    ledger.engine.dispose()


def test_diff_speaks_local_times_names_and_old_to_new_text(tmp_path: Path) -> None:
    chat_day = in_days(3)
    run_once(tmp_path, posts_file("Lock your car", chat_day,
                                  extra=f"  - id: gone\n    at: {at(in_days(4))}\n    message: bye\n"))
    (tmp_path / "new.yaml").write_text(posts_file("Lock your bike", chat_day + timedelta(days=1)))
    diff = oyez("diff", "-c", "new.yaml", cwd=tmp_path, env=ENV)
    assert diff.returncode == 0, diff.stderr
    tz = f"{chat_day.astimezone(config.times.zone('Europe/London')):%Z}"
    lines = diff.stdout.splitlines()
    assert "key" not in diff.stdout and "Z " not in diff.stdout
    start = rf"\w\w\w .* {tz}  chat start -> police-page: \"We're live\""
    assert any(re.fullmatch(rf"\+ {start}", ln) for ln in lines)
    assert any(re.fullmatch(rf"- {start}  \(cancelled\)", ln) for ln in lines)
    assert any(re.fullmatch(r"- .*  gone -> police-page: 'bye'  \(cancelled\)", ln) for ln in lines)
    assert any(re.fullmatch(r"~ .*  tip -> police-page", ln) for ln in lines)
    assert "    text: 'Lock your car' -> 'Lock your bike'" in lines


def test_diff_after_only_a_dry_run_compares_with_it(tmp_path: Path) -> None:
    text = posts_file("Lock your car", in_days(3))
    run_once(tmp_path, text, dry_run=True)
    (tmp_path / "jobs.yaml").write_text(text)
    diff = oyez("diff", cwd=tmp_path, env=ENV).stdout
    assert diff.splitlines()[0] == "(compared with the dry run: no real run has used this ledger yet)"
    assert not [ln for ln in diff.splitlines() if ln[:1] in "+-~"], diff


def test_diff_reaches_past_the_scheduled_days(tmp_path: Path) -> None:
    old = posts_file("Lock your car", in_days(60))
    run_once(tmp_path, old)
    (tmp_path / "old.yaml").write_text(old)
    (tmp_path / "new.yaml").write_text(posts_file("Lock your car", in_days(61)).replace(
        "live_events:", "  - id: weekly\n    cron: '0 9 * * MON'\n    message: Tip\nlive_events:"))
    no_reference = oyez("diff", "-c", "new.yaml", cwd=tmp_path, env=ENV).stdout
    assert "not compared" in no_reference and "--against" in no_reference
    diff = oyez("diff", "-c", "new.yaml", "--against", "old.yaml", cwd=tmp_path, env=ENV).stdout
    assert re.search(r"^- .*  chat start -> police-page: \"We're live\"  \(removed\)$", diff, re.M), diff
    assert re.search(r"^\+ .*  chat start -> police-page: \"We're live\"$", diff, re.M), diff
    assert re.search(r"^\+ weekly \(0 9 \* \* MON\) added, after .*: 'Tip'$", diff, re.M), diff


def hold_write_lock(db: Path, ready: threading.Event, release: threading.Event) -> None:
    """Another process's writer: BEGIN IMMEDIATE and keep it until told."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    ready.set()
    release.wait(60)
    conn.execute("ROLLBACK")
    conn.close()


def test_diff_reads_without_taking_the_write_lock(tmp_path: Path) -> None:
    text = posts_file("Lock your car", in_days(3))
    run_once(tmp_path, text)
    (tmp_path / "new.yaml").write_text(posts_file("Lock your bike", in_days(3)))
    ready, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=hold_write_lock, args=(tmp_path / "oyez.db", ready, release))
    holder.start()
    try:
        assert ready.wait(10)
        started = time.monotonic()
        # the ledger's busy timeout is 30 s: a diff that wanted the write lock would wait it out
        diff = oyez("diff", "-c", "new.yaml", cwd=tmp_path, env=ENV)
        took = time.monotonic() - started
        assert holder.is_alive()  # the lock was held for the whole diff
    finally:
        release.set()
        holder.join(10)
    assert diff.returncode == 0, diff.stderr
    assert "    text: 'Lock your car' -> 'Lock your bike'" in diff.stdout
    assert took < 25


def test_a_preview_sync_does_not_wait_for_a_writer(ledger: Ledger) -> None:
    """While a daemon holds the write lock (busy timeout 30 s), a preview still answers at once."""
    if not ledger.url.startswith("sqlite"):
        pytest.skip("the lock is SQLite's")
    due = datetime.now(UTC) + timedelta(hours=1)
    ledger.sync([occurrence("post:a:page", due)], due + timedelta(days=1), dry_run=False,
                now=datetime.now(UTC))
    ready, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=hold_write_lock,
                              args=(Path(ledger.url.removeprefix("sqlite:///")), ready, release))
    holder.start()
    try:
        assert ready.wait(10)
        started = time.monotonic()
        preview = ledger.sync([occurrence("post:a:page", due, "changed")], due + timedelta(days=1),
                              dry_run=False, now=datetime.now(UTC), preview=True)
        took = time.monotonic() - started
    finally:
        release.set()
        holder.join(10)
    assert preview.changed == ["post:a:page"] and preview.before["post:a:page"][1] == "hello"
    assert took < 20


def test_the_readme_example_is_a_valid_jobs_file() -> None:
    example = re.findall(r"```yaml\n(.*?)```", (ROOT / "README.md").read_text(), re.S)[0]  # the first
    cfg = config.parse(example.encode(), env=ENV)
    assert cfg.live_events[0].image and cfg.posts[1].start is not None
    assert cfg.warnings == ()


def test_diff_without_a_ledger_shows_the_whole_file_as_new(tmp_path: Path) -> None:
    diff = oyez("diff", "-c", str(ROOT / "jobs.yaml"), cwd=tmp_path, env=ENV)
    assert diff.returncode == 0, diff.stderr
    lines = diff.stdout.splitlines()
    assert any(ln.startswith("+ Tue 2027-01-12 07:49 GMT  live-chat-announce -> police-page: 'Police")
               for ln in lines)
    assert any(ln.startswith("+ Thu 2027-01-14 18:00 GMT  hate-crime-live-chat start -> police-page:")
               for ln in lines)
    assert any(ln.startswith("+ weekly-safety-tip (0 9 * * MON) added, after ") for ln in lines)
    assert not (tmp_path / "oyez.db").exists()
