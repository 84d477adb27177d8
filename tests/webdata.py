"""A ledger for the sample jobs.yaml holding every status, as the web page's tests see it."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlmodel import col, update

from scheduler import config, plan
from scheduler.ledger import Attempt, DaemonRow, Delivery, Ledger, Reload, TargetHealth

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "jobs.yaml"
# Wednesday, between the sample's announcement (Tue 12 Jan) and its live chat (Thu 14 Jan 18:00)
NOW = datetime(2027, 1, 13, 12, 0, tzinfo=UTC)
CRON = "cron:weekly-safety-tip:police-page:2027-01-11T09:00:00Z"
ANNOUNCE = "post:live-chat-announce:police-page"
REMINDER = "live:hate-crime-live-chat:reminder-2d:2027-01-14T18:00:00Z:police-page"


def sample_files(tmp: Path) -> tuple[str, str]:
    """Copy the sample jobs.yaml into `tmp`; return (its path, a ledger URL there)."""
    shutil.copy(SAMPLE, tmp / "jobs.yaml")
    return str(tmp / "jobs.yaml"), f"sqlite:///{tmp / 'oyez.db'}"


def fill(ledger: Ledger, jobs: str, now: datetime = NOW) -> None:
    """What a daemon would have left by `now`: one post sent (late, after a retry), the Monday
    tip failed, the two-day reminder missed, a removed post cancelled, the rest pending."""
    cfg = config.load(jobs, strict_env=False)
    start, end = now - timedelta(days=3), now + timedelta(days=30)
    ledger.sync(plan.expand(cfg, start, end), end, dry_run=False, now=now - timedelta(days=3))
    with ledger.writing() as s:
        earlier = now - timedelta(hours=2)
        _set(s, ANNOUNCE, updated_at=earlier, status="sent", attempts=2, remote_id="123_456",
             permalink="https://www.facebook.com/123_456",
             lateness_ms=64_200, sent_at=datetime(2027, 1, 12, 7, 50, 4, tzinfo=UTC))
        _set(s, CRON, updated_at=earlier, status="failed", attempts=1, error="(#100) Invalid parameter")
        _set(s, REMINDER, updated_at=earlier, status="missed",
             error="not sent within its window (due 2027-01-12 18:00:00Z, now 16m00s late)")
        s.add(Delivery(key="post:old-appeal:police-page", job_id="old-appeal", part="post",
                       target="police-page", tz="Europe/London", due_at=now - timedelta(hours=20),
                       deadline=now - timedelta(hours=19), status="cancelled",
                       error="removed from jobs.yaml", text="An appeal that was withdrawn.",
                       created_at=now, updated_at=now))
        s.commit()
        ids = {d.key: d.id for d in ledger.deliveries(dry_run=False)}
        t = datetime(2027, 1, 12, 7, 49, 0, tzinfo=UTC)
        s.add(Attempt(delivery_id=ids[ANNOUNCE], number=1, node="web1:4242", started_at=t,
                      finished_at=t + timedelta(seconds=20), outcome="transient",
                      error="Graph 2: Service temporarily unavailable", lateness_ms=200))
        s.add(Attempt(delivery_id=ids[ANNOUNCE], number=2, node="web1:4242",
                      started_at=t + timedelta(seconds=64), finished_at=t + timedelta(seconds=65),
                      outcome="sent", lateness_ms=64_200))
        s.add(Attempt(delivery_id=ids[CRON], number=1, node="web1:4242",
                      started_at=datetime(2027, 1, 11, 9, 0, tzinfo=UTC),
                      finished_at=datetime(2027, 1, 11, 9, 0, 1, tzinfo=UTC), outcome="permanent",
                      error="(#100) Invalid parameter", lateness_ms=40))
        s.commit()
    running(ledger, jobs, now - timedelta(days=3), now)


def running(ledger: Ledger, jobs: str, started: datetime, heartbeat: datetime) -> None:
    """What a daemon records of itself: the jobs.yaml it loaded, and its heartbeat."""
    digest = config.load(jobs, strict_env=False).digest
    with ledger.writing() as s:
        s.add(Reload(at=started, node="web1:4242", path=jobs, digest=digest, ok=True, added=7))
        s.add(DaemonRow(node="web1:4242", host="web1", pid=4242, version="0.1.0",
                        started_at=started, heartbeat_at=heartbeat, config_digest=digest))
        s.commit()


def _set(s: object, key: str, **values: object) -> None:
    s.execute(update(Delivery).where(col(Delivery.key) == key).values(**values))  # type: ignore[attr-defined]


def unhealthy(ledger: Ledger, jobs: str, name: str = "police-page") -> None:
    """Mark a target's current settings as refused, as the daemon does on a token error."""
    cfg = config.load(jobs, strict_env=False)
    with ledger.writing() as s:
        s.add(TargetHealth(name=name, fingerprint=cfg.targets[name].fingerprint,
                           reason="Graph 190: token expired", since=NOW))
        s.commit()
