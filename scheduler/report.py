"""What `oyez plan`, `history`, `status` and `diff` show: rows for JSON, text for people."""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import adapters

from . import clock, config, plan
from .errors import OyezError, PublishError
from .settings import Settings

if TYPE_CHECKING:  # the database layer is imported only by commands that open a ledger
    from .ledger import DaemonRow, Delivery, Ledger


def _ledger(db: str) -> Ledger | None:
    """Open the ledger only if it exists: looking must not create a database."""
    if db.startswith("sqlite:///") and not os.path.exists(db.removeprefix("sqlite:///")):
        return None
    from .ledger import Ledger

    return Ledger(db, upgrade=False)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _status(row: Delivery | None, unhealthy: set[str]) -> str:
    if row is None:
        return "not yet in ledger"
    if row.status == "pending" and row.target in unhealthy:
        return "pending (target unhealthy)"
    if row.status == "retry":
        return f"retry (after attempt {row.attempts})"
    return row.status


def _unhealthy(ledger: Ledger, cfg: config.Config | None) -> set[str]:
    return {name for name, health in ledger.unhealthy().items()
            if cfg is None or (name in cfg.targets
                               and cfg.targets[name].fingerprint == health.fingerprint)}


def plan_rows(cfg: config.Config, start: datetime, end: datetime, db: str) -> list[dict[str, Any]]:
    """Every occurrence in [start, end) with its ledger status, if any."""
    occurrences = plan.expand(cfg, start, end)
    ledger = _ledger(db)
    rows: dict[str, Delivery] = {}
    unhealthy: set[str] = set()
    if ledger is not None:
        lo, _ = plan.ledger_window(cfg, start, end - start)
        rows = {d.key: d for d in ledger.deliveries(dry_run=False, since=lo, until=end)}
        unhealthy = _unhealthy(ledger, cfg)
    return [
        {
            "local": _iso(o.local_due), "zone": o.local_due.tzname(),
            "utc": _iso(o.due), "job": o.job_id, "part": o.part,
            "target": o.target, "text": o.text, "link": o.link, "image": o.image,
            "status": "draft" if o.draft else _status(rows.get(o.key), unhealthy), "key": o.key,
            "permalink": getattr(rows.get(o.key), "permalink", None), "under": o.parent,
        }
        for o in occurrences
    ]


def plan_text(rows: list[dict[str, Any]], start: datetime, end: datetime) -> str:
    """Human-readable plan."""
    lines = [f"{len(rows)} occurrences from {start:%Y-%m-%d %H:%M}Z to {end:%Y-%m-%d %H:%M}Z"]
    for row in rows:
        local = datetime.fromisoformat(row["local"])
        lines.append(f"\n{local:%a %Y-%m-%d %H:%M:%S} {row['zone']}  ({row['utc'][11:19]}Z)  "
                     f"{row['job']} {row['part']} -> {row['target']}  [{row['status']}]")
        lines += [f"    | {line}" for line in row["text"].splitlines()]
        lines += [f"    {k}: {row[k]}" for k in ("link", "image", "under", "permalink") if row.get(k)]
    return "\n".join(lines)


def history_rows(db: str, limit: int, dry_run: bool = False) -> list[dict[str, Any]]:
    """The newest deliveries in the ledger."""
    ledger = _ledger(db)
    if ledger is None:
        return []
    unhealthy = _unhealthy(ledger, None)
    return [
        {
            "key": d.key, "job": d.job_id, "part": d.part, "target": d.target,
            "due": _iso(d.due_at), "status": _status(d, unhealthy), "attempts": d.attempts,
            "remote_id": d.remote_id, "error": d.error, "sent_at": _iso(d.sent_at),
            "lateness_ms": d.lateness_ms, "dry_run": d.dry_run, "text": d.text,
            "config_digest": d.config_digest, "permalink": d.permalink,
        }
        for d in ledger.deliveries(dry_run=dry_run, limit=limit)
    ]


def history_text(rows: list[dict[str, Any]]) -> str:
    """Human-readable ledger."""
    if not rows:
        return "the ledger is empty"
    lines = [f"{'DUE (UTC)':<20} {'STATUS':<27} {'TRY':>3}  {'JOB / PART':<36} {'TARGET':<16} DETAIL"]
    for r in rows:
        if r["status"] == "sent":
            detail = f"{r['remote_id']} ({r['lateness_ms']} ms after its time)"
            if r.get("permalink"):
                detail += f" {r['permalink']}"
        else:
            detail = r["error"] or ""
        lines.append(f"{r['due'][:19]:<20} {r['status']:<27} {r['attempts']:>3}  "
                     f"{r['job'] + ' ' + r['part']:<36} {r['target']:<16} {detail}")
    return "\n".join(lines)


def reload_rows(db: str, limit: int) -> list[dict[str, Any]]:
    """The newest jobs.yaml reloads."""
    ledger = _ledger(db)
    if ledger is None:
        return []
    return [
        {"at": _iso(r.at), "node": r.node, "path": r.path, "digest": r.digest, "ok": r.ok,
         "added": r.added, "cancelled": r.cancelled, "changed": r.changed, "errors": r.errors}
        for r in ledger.reloads(limit)
    ]


def reloads_text(rows: list[dict[str, Any]]) -> str:
    """Human-readable reload log."""
    if not rows:
        return "no reloads recorded"
    lines = []
    for r in rows:
        what = (f"ok: +{r['added']} added, {r['cancelled']} cancelled, {r['changed']} changed"
                if r["ok"] else "INVALID, kept the previous schedule")
        lines.append(f"{r['at'][:19]}  {(r['digest'] or '-')[:12]}  {r['path']}  {what}")
        if r["errors"]:
            lines += [f"    {e}" for e in r["errors"].splitlines()]
    return "\n".join(lines)


def running_vs_disk(config_path: str, ledger: Ledger) -> list[str]:
    """What the daemon runs, and whether the file on disk is it (and if not, why)."""
    reloads = ledger.reloads(200)
    good = next((r for r in reloads if r.ok), None)
    if good is None:
        return ["running: nothing loaded yet"]
    lines = [f"running: {good.path} {good.digest[:12] if good.digest else '?'} "
             f"(loaded {good.at:%Y-%m-%d %H:%M:%S}Z)"]
    try:
        disk = hashlib.sha256(Path(config_path).read_bytes()).hexdigest()
    except OSError as exc:
        what = "is missing" if isinstance(exc, FileNotFoundError) else "cannot be read"
        return [*lines, f"on disk: {config_path} {what} ({exc.strerror}): the daemon keeps "
                        "running the schedule above"]
    if good.digest == disk:
        return [*lines, f"on disk: {config_path} is the running schedule"]
    bad = next((r for r in reloads if r.digest == disk and not r.ok), None)
    if bad is None:
        return [*lines, f"on disk: {config_path} {disk[:12]} differs and has not been "
                        "loaded yet (the daemon picks up changes within seconds)"]
    return [*lines, f"on disk: {config_path} {disk[:12]} is NOT running: invalid since "
                    f"{bad.at:%Y-%m-%d %H:%M:%S}Z:",
            *(f"    {e}" for e in (bad.errors or "").splitlines())]


def disk_note(config_path: str, db: str) -> list[str]:
    """`running_vs_disk` when a daemon has used this database and runs something else."""
    ledger = _ledger(db)
    if ledger is None:
        return []
    lines = running_vs_disk(config_path, ledger)
    return [] if len(lines) == 2 and lines[1].endswith("is the running schedule") else lines


STALE_AFTER = timedelta(seconds=30)  # a daemon whose heartbeat is older than this may be dead


def alive(daemon: DaemonRow, now: datetime) -> bool:
    """Whether a daemon's heartbeat is recent enough to count it as running."""
    return now - daemon.heartbeat_at < STALE_AFTER


def daemon_lines(ledger: Ledger, now: datetime) -> list[str]:
    """Which daemons run on this ledger (where, since when, dry run or not); stale ones flagged."""
    rows = ledger.daemons()
    if not any(alive(d, now) for d in rows):
        lines = ["daemon: NONE RUNNING on this ledger (nothing is being sent)"]
    else:
        lines = []
    for d in rows:
        ago = int((now - d.heartbeat_at).total_seconds())
        what = (f"{d.node}: host {d.host}, pid {d.pid}, oyez {d.version}"
                f"{', DRY RUN (sends nothing)' if d.dry_run else ''}, since "
                f"{d.started_at:%Y-%m-%d %H:%M:%S}Z, last heartbeat {ago}s ago")
        lines.append(f"daemon: running: {what}" if alive(d, now) else
                     f"daemon: STALE (no heartbeat for {ago}s; it stopped without saying so, or "
                     f"cannot reach the ledger): {what}")
    return lines


def status_text(config_path: str, db: str) -> str:
    """Is a daemon running? Is the file on disk what it runs? Which targets are unhealthy? What is open?"""
    ledger = _ledger(db)
    if ledger is None:
        return f"no ledger at {db}: the daemon has not run here yet"
    lines = [*daemon_lines(ledger, clock.now()), *running_vs_disk(config_path, ledger)]
    for name, health in sorted(ledger.unhealthy().items()):
        lines.append(f"target {name}: UNHEALTHY since {health.since:%Y-%m-%d %H:%M}Z: "
                     f"{health.reason}")
    counts = Counter(d.status for d in ledger.deliveries(dry_run=False))
    lines.append("deliveries: " + (", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
                                   or "none"))
    return "\n".join(lines)


def diff_text(cfg: config.Config, db: str) -> str:
    """What the daemon would do if `cfg` replaced the running file now."""
    ledger = _ledger(db)
    now = clock.now()
    start, end = plan.ledger_window(cfg, now, Settings.from_env().horizon)
    occurrences = {o.key: o for o in plan.expand(cfg, start, end)}
    if ledger is None:
        return "\n".join(f"+ {o.key} at {o.due:%Y-%m-%d %H:%M:%S}Z" for o in occurrences.values()
                         if not o.draft) or "no changes"
    result = ledger.sync(occurrences.values(), end, dry_run=False, now=now, preview=True)
    lines = [f"+ {k} at {occurrences[k].due:%Y-%m-%d %H:%M:%S}Z" for k in result.added]
    lines += [f"- {d.key} at {d.due_at:%Y-%m-%d %H:%M:%S}Z (cancelled)" for d in result.cancelled]
    lines += [f"~ {k} (text or time changed)" for k in result.changed]
    lines += [f"! {k} was already sent; moving it will not send it again (give it a new id)"
              for k in result.resend_refused]
    return "\n".join(lines) or "no changes"


def schema_text(db: str, *, upgrade: bool) -> str:
    """Where the ledger's schema stands (and, with `upgrade`, bring it to the newest)."""
    from sqlalchemy.exc import SQLAlchemyError

    from . import migrations
    from .ledger import make_engine, safe_url

    where = safe_url(db)
    engine = make_engine(db)
    try:
        if upgrade:
            before, after = migrations.upgrade(engine, where)
            return (f"ledger {where}: schema {after}, already the newest" if before == after else
                    f"ledger {where}: upgraded from schema {before or 'none (new ledger)'} to {after}")
        with engine.connect() as conn:
            version = migrations.check(conn, where)
    except SQLAlchemyError as exc:
        raise OyezError(f"cannot read the ledger {where}: {getattr(exc, 'orig', exc)}") from None
    finally:
        engine.dispose()
    head = migrations.head()
    if version == head:
        return f"ledger {where}: schema {version}, the newest this oyez knows"
    return (f"ledger {where}: schema {version or 'none (no ledger yet)'}, this oyez needs {head}: "
            "run `oyez db upgrade` (`oyez run` also upgrades it)")


def check_targets(cfg: config.Config) -> list[tuple[str, bool, str]]:
    """(target, ok, account name or error) for every target, asking its network."""
    from adapters import http as web

    results = []
    with web.session() as http:
        for name, target in cfg.targets.items():
            try:
                who = adapters.get(target.adapter)(target.settings, http).check()
                results.append((name, True, who))
            except PublishError as exc:
                results.append((name, False, str(exc)))
    return results
