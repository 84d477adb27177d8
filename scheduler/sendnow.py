"""`oyez send ID`: publish one post from jobs.yaml now, through the ledger and its claims.

The post's own ledger row is used, so its scheduled time cannot send it again:
- a one-off post: its row `post:{id}:{target}` is made due now;
- a cron post: the row of its *next* occurrence is made due now, so that
  occurrence is the one sent (the following ones go out as usual).
The row is then claimed and sent like any other (the same claim, fencing and
alerts). Once sent, the row gets its planned time back (`sent_at` says when it
went): the daemon's wake-up at that time finds it sent and does nothing, and a
reload sees nothing moved. If it was not sent, a retry is left to the running
daemon (due now); a failure goes back to its planned time at the next reload.
Refused: a post already sent (give it a new id) or being sent right now.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import datetime, timedelta
from typing import TextIO

from sqlalchemy import insert, select, update

from adapters import http as web

from . import plan
from .alerts import Alerts
from .config import Config, Post
from .delivery import Publisher
from .errors import OyezError
from .incidents import Incidents
from .ledger import Delivery, Ledger, _table
from .settings import Settings

log = logging.getLogger(__name__)
_D = _table(Delivery)
CRON_LOOKAHEAD = timedelta(days=400)


def send_now(cfg: Config, settings: Settings, job_id: str, target: str | None, now: datetime, *,
             dry_run: bool, out: TextIO) -> list[Delivery]:
    """Send post `job_id` (to `target`, or to each of its targets) now; return the rows after.

    Raises OyezError when there is no such post or target, or it cannot be sent now.
    """
    post = next((p for p in cfg.posts if p.id == job_id), None)
    if post is None:
        raise OyezError(f"no post with id {job_id!r} in {cfg.path} (live-event posts go out "
                        "with their event)")
    if target is not None and target not in post.targets:
        raise OyezError(f"post {job_id!r} does not go to {target!r} (its targets: "
                        f"{', '.join(post.targets)})")
    planned = [o for o in _next(cfg, post, now) if target in (None, o.target)]
    occurrences = [dataclasses.replace(o, due=now, deadline=now + post.grace) for o in planned]
    ledger = Ledger(settings.db)
    alerts = Alerts(None if dry_run else Incidents(ledger), settings.node, batch_seconds=0,
                    poll_seconds=1, timeout=1)  # no thread: a running daemon sends the alerts
    http = web.session(pool_size=2)
    publisher = Publisher(ledger, settings, http, dry_run=dry_run, out=out, wake=lambda *_: None,
                          alerts=alerts)
    try:
        publisher.use(cfg)
        ids = [_bring_forward(ledger, occ, now, dry_run) for occ in occurrences]
        for delivery_id, occ in zip(ids, planned, strict=True):
            publisher.deliver(delivery_id, occ.target)
            ledger.flush()  # its outcome is in the ledger
            _keep_planned_time(ledger, delivery_id, occ)
        with ledger.session() as s:
            return [row for i in ids if (row := s.get(Delivery, i)) is not None]
    finally:
        publisher.close()
        ledger.engine.dispose()


def _next(cfg: Config, post: Post, now: datetime) -> list[plan.Occurrence]:
    """The occurrence of `post` that `send` sends: the one-off itself, or the next cron one."""
    alone = dataclasses.replace(cfg, posts=(post,), live_events=())
    if post.at is not None:
        return plan.expand(alone, post.at, post.at + timedelta(microseconds=1))
    upcoming = plan.expand(alone, now, now + CRON_LOOKAHEAD)
    if not upcoming:
        raise OyezError(f"post {post.id!r} has no occurrence left (until {post.until:%Y-%m-%d})")
    first = upcoming[0].due
    return [o for o in upcoming if o.due == first]


def _keep_planned_time(ledger: Ledger, delivery_id: int, occ: plan.Occurrence) -> None:
    """A sent row keeps the time jobs.yaml gives it, so a reload sees nothing moved."""
    with ledger.transaction() as conn:
        conn.execute(update(_D).where(_D.c.id == delivery_id, _D.c.status == "sent")
                     .values(due_at=occ.due, deadline=occ.deadline))


def _bring_forward(ledger: Ledger, occ: plan.Occurrence, now: datetime, dry_run: bool) -> int:
    """Make `occ`'s ledger row pending and due now; return its id. Raises OyezError."""
    content = {"job_id": occ.job_id, "part": occ.part, "target": occ.target, "tz": occ.tz_name,
               "due_at": now, "deadline": occ.deadline, "text": occ.text, "link": occ.link,
               "image": occ.image, "status": "pending", "next_attempt_at": None, "updated_at": now}
    with ledger.transaction() as conn:
        row = conn.execute(select(_D).where(_D.c.key == occ.key, _D.c.dry_run == dry_run)).first()
        if row is None:
            return int(conn.execute(insert(_D).values(key=occ.key, dry_run=dry_run, created_at=now,
                                                      **content).returning(_D.c.id)).scalar_one())
        if row.status == "sent":
            raise OyezError(f"{occ.key} was already sent at {row.sent_at:%Y-%m-%d %H:%M}Z as "
                            f"{row.remote_id}; to publish it again, give the post a new id")
        if row.status == "sending":
            raise OyezError(f"{occ.key} is being sent right now by {row.claimed_by}")
        if row.uncertain:  # an earlier attempt may have published it: that text is looked for
            content.update(text=row.text, link=row.link, image=row.image)
        if row.status in ("failed", "missed", "cancelled"):
            content.update(attempts=0, error=None)
        conn.execute(update(_D).where(_D.c.id == row.id).values(**content))
        return int(row.id)
