"""The ledger on a real SQLite file: keys, sync, claim-then-send, fencing."""

from __future__ import annotations

import dataclasses
import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import occurrence
from sqlalchemy.exc import OperationalError

from scheduler.ledger import Attempt, Ledger
from scheduler.plan import Occurrence

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
UNTIL = NOW + timedelta(days=7)
LEASE = timedelta(minutes=5)


def occ(key: str, due: datetime = NOW, text: str = "hello", *, draft: bool = False) -> Occurrence:
    return occurrence(key, due, text, draft=draft)


def sync(ledger: Ledger, *occurrences: Occurrence, dry_run: bool = False, preview: bool = False,
         now: datetime = NOW) -> tuple[list[str], list[str], list[str]]:
    result = ledger.sync(occurrences, UNTIL, dry_run=dry_run, now=now, preview=preview)
    return result.added, result.changed, [d.key for d in result.cancelled]


def status(ledger: Ledger, dry_run: bool = False) -> dict[str, str]:
    return {d.key: d.status for d in ledger.deliveries(dry_run=dry_run)}


def send(ledger: Ledger, key: str, node: str = "n1", now: datetime = NOW) -> None:
    [row] = [d for d in ledger.deliveries(dry_run=False) if d.key == key]
    assert row.id is not None
    claimed = ledger.claim(row.id, node, now, LEASE)
    assert claimed is not None
    assert ledger.finish(claimed, node, attempt(claimed.id or 0, now), status="sent", remote_id="1_2")


def attempt(delivery_id: int, now: datetime) -> Attempt:
    return Attempt(delivery_id=delivery_id, number=1, node="n1", started_at=now, finished_at=now,
                   outcome="sent", lateness_ms=0)


def test_sync_adds_changes_cancels_and_restores(ledger: Ledger) -> None:
    assert sync(ledger, occ("post:a:page"), occ("post:b:page")) == (["post:a:page", "post:b:page"], [], [])
    assert sync(ledger, occ("post:a:page"), occ("post:b:page")) == ([], [], [])
    assert sync(ledger, occ("post:a:page", text="fixed typo")) == ([], ["post:a:page"], ["post:b:page"])
    assert status(ledger) == {"post:a:page": "pending", "post:b:page": "cancelled"}
    [a] = [d for d in ledger.deliveries(dry_run=False) if d.key == "post:a:page"]
    assert a.text == "fixed typo"
    restored = sync(ledger, occ("post:a:page", text="fixed typo"), occ("post:b:page"))
    assert restored == (["post:b:page"], [], [])
    assert status(ledger)["post:b:page"] == "pending"


def test_draft_is_planned_but_never_enters_the_ledger(ledger: Ledger) -> None:
    sync(ledger, occ("post:a:page", draft=True))
    assert status(ledger) == {}


def test_moved_one_off_post_that_went_out_is_not_sent_again(ledger: Ledger) -> None:
    sync(ledger, occ("post:a:page"))
    send(ledger, "post:a:page")
    result = ledger.sync([occ("post:a:page", due=NOW + timedelta(days=1))], UNTIL, dry_run=False,
                         now=NOW)
    assert result.added == [] and result.resend_refused == ["post:a:page"]
    assert status(ledger) == {"post:a:page": "sent"}


def test_moved_live_event_gets_fresh_reminders_and_keeps_sent_ones(ledger: Ledger) -> None:
    old = "2026-11-26T18:00:00Z"
    new = "2026-11-27T18:00:00Z"
    sync(ledger, occ(f"live:chat:reminder-2d:{old}:page"), occ(f"live:chat:reminder-1h:{old}:page",
                                                              NOW + timedelta(hours=5)))
    send(ledger, f"live:chat:reminder-2d:{old}:page")
    added, _, cancelled = sync(ledger, occ(f"live:chat:reminder-1h:{new}:page", NOW + timedelta(days=1)))
    assert added == [f"live:chat:reminder-1h:{new}:page"]
    assert cancelled == [f"live:chat:reminder-1h:{old}:page"]
    assert status(ledger)[f"live:chat:reminder-2d:{old}:page"] == "sent"


def test_recurring_posts_are_keyed_by_instant(ledger: Ledger) -> None:
    keys = [f"cron:tip:page:2026-11-{day}T09:00:00Z" for day in (25, 26)]
    sync(ledger, *(occ(k) for k in keys))
    send(ledger, keys[0])
    assert status(ledger) == {keys[0]: "sent", keys[1]: "pending"}


def test_preview_writes_nothing(ledger: Ledger) -> None:
    sync(ledger, occ("post:a:page"))
    assert sync(ledger, occ("post:b:page"), preview=True) == (["post:b:page"], [], ["post:a:page"])
    assert status(ledger) == {"post:a:page": "pending"}


def test_dry_run_rows_do_not_touch_real_ones(ledger: Ledger) -> None:
    sync(ledger, occ("post:a:page"), dry_run=True)
    sync(ledger, occ("post:a:page"))
    [dry] = ledger.deliveries(dry_run=True)
    assert dry.id is not None
    assert ledger.claim(dry.id, "n1", NOW, LEASE) is not None
    assert status(ledger, dry_run=True) == {"post:a:page": "sending"}
    assert status(ledger) == {"post:a:page": "pending"}


def test_only_one_of_many_racing_claims_wins(ledger: Ledger) -> None:
    sync(ledger, occ("post:a:page"))
    [row] = ledger.deliveries(dry_run=False)
    assert row.id is not None
    delivery_id = row.id
    barrier = threading.Barrier(12)
    wins: list[str] = []

    def claim(node: str) -> None:
        barrier.wait()
        if ledger.claim(delivery_id, node, NOW, LEASE) is not None:
            wins.append(node)

    threads = [threading.Thread(target=claim, args=(f"node{i}",)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1
    [row] = ledger.deliveries(dry_run=False)
    assert (row.status, row.claimed_by, row.attempts) == ("sending", wins[0], 1)


@pytest.mark.parametrize("now, next_attempt", [
    (NOW - timedelta(seconds=1), None),  # not yet due
    (NOW + timedelta(minutes=15), None),  # at the deadline: too late
    (NOW, NOW + timedelta(seconds=30)),  # waiting for its retry time
])
def test_claim_refuses_what_is_not_sendable(ledger: Ledger, now: datetime,
                                            next_attempt: datetime | None) -> None:
    sync(ledger, occ("post:a:page"))
    [row] = ledger.deliveries(dry_run=False)
    assert row.id is not None
    if next_attempt is not None:
        ledger.defer(row.id, next_attempt, NOW)
    assert ledger.claim(row.id, "n1", now, LEASE) is None


def test_outcome_is_fenced_by_the_claim(ledger: Ledger) -> None:
    sync(ledger, occ("post:a:page"))
    [row] = ledger.deliveries(dry_run=False)
    assert row.id is not None
    mine = ledger.claim(row.id, "n1", NOW, LEASE)
    assert mine is not None
    assert ledger.release(mine, NOW + LEASE * 2, "abandoned")  # another daemon gave up on n1
    assert not ledger.finish(mine, "n1", attempt(row.id, NOW), status="sent")
    [row] = ledger.deliveries(dry_run=False)
    assert (row.status, row.uncertain) == ("retry", True)
    assert ledger.attempts(row.id) == []


def test_expire_marks_missed_with_how_late(ledger: Ledger) -> None:
    sync(ledger, occ("post:a:page"), occ("post:b:page", NOW + timedelta(hours=1)))
    missed = ledger.expire(NOW + timedelta(minutes=20), dry_run=False)
    assert [d.key for d in missed] == ["post:a:page"]
    assert status(ledger) == {"post:a:page": "missed", "post:b:page": "pending"}
    assert missed[0].error is not None and "20m00s late" in missed[0].error


def test_a_preview_takes_no_write_lock_and_a_sync_waits_for_none_while_reading(tmp_path: Path) -> None:
    """`oyez diff` must not hold up the daemon: its preview reads only (SQLite: no write lock)."""
    ledger = Ledger(f"sqlite:///{tmp_path / 'oyez.db'}", busy_seconds=0.2)
    sync(ledger, *(occ(f"post:p{i}:page", NOW + timedelta(minutes=i)) for i in range(2000)))
    other = sqlite3.connect(tmp_path / "oyez.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # a writer (the daemon claiming a post) holds the lock
    try:
        added, changed, cancelled = sync(ledger, occ("post:new:page"), preview=True)
        assert (added, changed, len(cancelled)) == (["post:new:page"], [], 2000)
        with pytest.raises(OperationalError):  # a real sync does need the lock
            sync(ledger, occ("post:new:page"))
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert len(status(ledger)) == 2000  # the preview wrote nothing
    ledger.engine.dispose()


def test_a_sync_that_loses_a_race_with_a_claim_looks_again(ledger: Ledger) -> None:
    sync(ledger, occ("post:a:page", NOW, "first text"))
    [row] = ledger.deliveries(dry_run=False)
    assert row.id is not None
    real = ledger.transaction
    raced: list[object] = []

    def claim_between_read_and_write() -> Any:
        if not raced:  # the sync has read the row as pending; the daemon claims it now
            raced.append("claiming")
            raced[0] = ledger.claim(row.id or 0, "n1", NOW, LEASE)
        return real()

    ledger.transaction = claim_between_read_and_write  # type: ignore[method-assign]
    result = ledger.sync([occ("post:a:page", NOW, "edited text")], UNTIL, dry_run=False, now=NOW)
    assert raced[0] is not None and result.changed == []  # in flight: the send decides, not the sync
    assert status(ledger) == {"post:a:page": "sending"}


def test_claim_ahead_takes_what_is_due_by_then_and_unclaim_gives_it_back_untouched(ledger: Ledger) -> None:
    soon, later = NOW + timedelta(milliseconds=800), NOW + timedelta(seconds=5)
    sync(ledger, occ("post:a:page", soon), occ("post:b:page", later), occ("post:c:page", soon))
    ids = {d.key: d.id or 0 for d in ledger.deliveries(dry_run=False)}
    armed = ledger.claim_ahead(list(ids.values()), "n1", NOW, NOW + timedelta(seconds=1), LEASE)
    assert sorted(d.key for d in armed) == ["post:a:page", "post:c:page"]  # b is not due by then
    assert all((d.status, d.claimed_by, d.attempts) == ("sending", "n1", 1) for d in armed)
    assert ledger.claim_ahead(list(ids.values()), "n2", NOW, NOW + timedelta(seconds=1), LEASE) == []
    assert ledger.unclaim(armed, "n2", NOW) == 0  # only the holder gives a claim back
    assert ledger.unclaim(armed, "n1", NOW) == 2
    rows = {d.key: d for d in ledger.deliveries(dry_run=False)}
    assert {k: (d.status, d.attempts, d.claimed_by, d.first_attempt_at) for k, d in rows.items()} == {
        k: ("pending", 0, None, None) for k in ids}


def test_claim_ahead_leaves_a_comment_for_its_instant(ledger: Ledger) -> None:
    comment = dataclasses.replace(occ("live:e:start:page"), parent="post:a:page")
    ledger.sync([occ("post:a:page"), comment], UNTIL, dry_run=False, now=NOW)
    ids = [d.id or 0 for d in ledger.deliveries(dry_run=False)]
    assert [d.key for d in ledger.claim_ahead(ids, "n1", NOW, NOW, LEASE)] == ["post:a:page"]


def test_outcomes_recorded_together_still_fence_each_claim(ledger: Ledger) -> None:
    """Group commit: outcomes from many threads share transactions, and one whose claim was
    lost is refused alone while the others are recorded."""
    sync(ledger, *(occ(f"post:p{i}:page") for i in range(40)))
    claimed = [ledger.claim(d.id or 0, "n1", NOW, LEASE) for d in ledger.deliveries(dry_run=False)]
    rows = [row for row in claimed if row is not None]
    lost = rows[7]
    assert ledger.release(lost, NOW, "taken over")
    results: dict[str, bool] = {}
    barrier = threading.Barrier(len(rows))

    def finish(row: Any) -> None:
        barrier.wait()
        results[row.key] = ledger.finish(row, "n1", attempt(row.id, NOW), status="sent", remote_id=row.key)

    threads = [threading.Thread(target=finish, args=(row,)) for row in rows]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == {row.key: row is not lost for row in rows}
    after = {d.key: d for d in ledger.deliveries(dry_run=False)}
    assert after[lost.key].status == "retry" and ledger.attempts(lost.id or 0) == []
    assert all(after[r.key].status == "sent" and after[r.key].remote_id == r.key
               and len(ledger.attempts(r.id or 0)) == 1 for r in rows if r is not lost)


def test_a_claim_is_renewed_only_by_its_holder(ledger: Ledger) -> None:
    sync(ledger, occ("post:a:page"), occ("post:b:page"))
    a, b = ledger.claim_ahead([d.id or 0 for d in ledger.deliveries(dry_run=False)], "n1", NOW, NOW, LEASE)
    later = NOW + LEASE * 0.9  # a lane that fell behind: its claims near their end
    assert ledger.renew(a, "n1", later, LEASE) and a.lease_until == later + LEASE
    assert ledger.release(b, NOW + LEASE * 2, "abandoned")  # another daemon took b over
    assert not ledger.renew(b, "n1", later, LEASE)  # so n1 must not send it
    assert {d.key: (d.status, d.lease_until) for d in ledger.deliveries(dry_run=False)} == {
        a.key: ("sending", later + LEASE), b.key: ("retry", None)}
def test_sync_of_some_jobs_leaves_the_others_alone(ledger: Ledger) -> None:
    """A reload that changed job b syncs b's deliveries only: a's are not in `occurrences`,
    yet stay open; `open` and `next` still count every job."""
    later = NOW + timedelta(hours=1)
    sync(ledger, occ("post:a:page"), occ("post:b:page", later), occ("post:c:page", later))
    result = ledger.sync([occ("post:b:page", later, "edited")], UNTIL, dry_run=False, now=NOW,
                         jobs={"b", "c"})
    assert (result.added, result.changed, [d.key for d in result.cancelled]) == \
        ([], ["post:b:page"], ["post:c:page"])
    assert status(ledger) == {"post:a:page": "pending", "post:b:page": "pending",
                              "post:c:page": "cancelled"}
    assert [d.key for d in result.active] == ["post:b:page"]
    assert result.open == 2 and result.next is not None and result.next.key == "post:a:page"
