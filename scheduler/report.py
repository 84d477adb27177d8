"""What `oyez plan`, `history`, `status` and `diff` show: rows for JSON, text for people."""

from __future__ import annotations

import hashlib
import math
import os
import threading
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import requests

import adapters
from adapters.base import TokenInspector

from . import clock, config, plan, times
from .errors import AuthError, ConfigError, OyezError, PublishError

if TYPE_CHECKING:  # the database layer is imported only by commands that open a ledger
    from .ledger import DaemonRow, Delivery, Ledger

STALE_AFTER = timedelta(seconds=30)  # a daemon whose last heartbeat is older is not running
RECENT = timedelta(hours=24)  # a failure or miss this recent needs attention


def _ledger(db: str | Ledger) -> Ledger | None:
    """The ledger at URL `db` (or `db` itself, already open), or None if there is none.

    Looking must not create a database, nor change (or upgrade) one: a URL is opened
    read-only, and refused if its schema is not the newest.
    """
    if not isinstance(db, str):
        return db
    if db.startswith("sqlite:///") and not os.path.exists(db.removeprefix("sqlite:///")):
        return None
    from .ledger import Ledger

    return Ledger(db, readonly=True)


def open_ledger(db: str) -> Ledger | None:
    """A read-only ledger for a long-lived reader (the web page), or None if none exists yet."""
    return _ledger(db)


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


def kind(key: str, part: str) -> str:
    """What a delivery is, for people: post, cron, reminder, live or thanks."""
    if key.startswith("live:"):
        return {"start": "live", "end": "thanks"}.get(part, "reminder")
    return key.partition(":")[0]


def _outcome(row: Delivery | None, cfg: config.Config | None) -> dict[str, Any]:
    """What the ledger knows of a delivery beyond its plan (all None when it is not there).

    `url` is the post's address as the network gave it when it went out (`permalink`).
    """
    if row is None:
        return {"delivery": None, "attempts": 0, "remote_id": None, "url": None, "error": None,
                "sent_at": None, "lateness_ms": None}
    return {"delivery": row.id, "attempts": row.attempts, "remote_id": row.remote_id,
            "url": row.permalink, "error": row.error,
            "sent_at": _iso(row.sent_at), "lateness_ms": row.lateness_ms}


def plan_rows(cfg: config.Config, start: datetime, end: datetime,
              db: str | Ledger) -> list[dict[str, Any]]:
    """Every occurrence in [start, end) with its ledger status and outcome, if any."""
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
            "utc": _iso(o.due), "job": o.job_id, "part": o.part, "kind": kind(o.key, o.part),
            "target": o.target, "text": o.text, "link": o.link, "image": o.image,
            "status": "draft" if o.draft else _status(rows.get(o.key), unhealthy), "key": o.key,
            **_outcome(None if o.draft else rows.get(o.key), cfg),
            "permalink": getattr(rows.get(o.key), "permalink", None), "under": o.parent,
        }
        for o in occurrences
    ]


def timeline_rows(cfg: config.Config | None, start: datetime, end: datetime,
                  db: str | Ledger) -> list[dict[str, Any]]:
    """`plan_rows`, plus what the ledger holds in the window that the plan no longer has.

    Those are the deliveries of an earlier jobs.yaml: cancelled ones, and the
    outcomes of posts since removed or moved. Without a valid `cfg`, the ledger alone.
    """
    rows = plan_rows(cfg, start, end, db) if cfg is not None else []
    ledger = _ledger(db)
    if ledger is None:
        return rows
    planned = {r["key"] for r in rows}
    unhealthy = _unhealthy(ledger, cfg)
    for d in ledger.deliveries(dry_run=False, since=start, until=end):
        if d.key not in planned:
            local = d.due_at.astimezone(times.zone(d.tz))
            rows.append({
                "local": _iso(local), "zone": local.tzname(), "utc": _iso(d.due_at),
                "job": d.job_id, "part": d.part, "kind": kind(d.key, d.part), "target": d.target,
                "text": d.text, "link": d.link, "image": d.image, "status": _status(d, unhealthy),
                "key": d.key, **_outcome(d, cfg),
            })
    rows.sort(key=lambda r: str(r["utc"]))
    return rows


def delivery_detail(db: str | Ledger, delivery_id: int,
                    cfg: config.Config | None) -> dict[str, Any] | None:
    """One delivery with every attempt (time, node, outcome, error), or None if there is none."""
    ledger = _ledger(db)
    if ledger is None:
        return None
    from .ledger import Delivery

    with ledger.session() as s:
        row = s.get(Delivery, delivery_id)
    if row is None or row.dry_run:
        return None
    local = row.due_at.astimezone(times.zone(row.tz))
    return {
        "key": row.key, "job": row.job_id, "part": row.part, "kind": kind(row.key, row.part),
        "target": row.target, "local": _iso(local), "zone": local.tzname(), "utc": _iso(row.due_at),
        "deadline": _iso(row.deadline), "text": row.text, "link": row.link, "image": row.image,
        "status": _status(row, _unhealthy(ledger, cfg)), **_outcome(row, cfg),
        "history": [
            {"number": a.number, "node": a.node, "started_at": _iso(a.started_at),
             "finished_at": _iso(a.finished_at), "outcome": a.outcome, "error": a.error,
             "lateness_ms": a.lateness_ms}
            for a in ledger.attempts(delivery_id)
        ],
    }


# the JSON keeps the ledger's words; people read these
_PLAIN_STATUS = {"not yet in ledger": "planned (scheduled when it is 7 days away or less)"}


def _local(moment: datetime, tz: ZoneInfo | str) -> str:
    zone = times.zone(tz) if isinstance(tz, str) else tz
    return f"{moment.astimezone(zone):%a %Y-%m-%d %H:%M %Z}"


def plan_text(rows: list[dict[str, Any]], start: datetime, end: datetime, cfg: config.Config) -> str:
    """Human-readable plan, and what lies after its window."""
    lines = [f"{_n(len(rows), 'occurrence')} from {_local(start, cfg.timezone)} "
             f"to {_local(end, cfg.timezone)}"]
    for row in rows:
        local = datetime.fromisoformat(row["local"])
        status = _PLAIN_STATUS.get(row["status"], row["status"])
        lines.append(f"\n{local:%a %Y-%m-%d %H:%M:%S} {row['zone']}  ({row['utc'][11:19]} UTC)  "
                     f"{row['job']} {row['part']} -> {row['target']}  [{status}]")
        lines += [f"    | {line}" for line in row["text"].splitlines()]
        lines += [f"    {k}: {row[k]}" for k in ("link", "image", "under", "permalink") if row.get(k)]
    later = plan.beyond(cfg, end)
    if later.first is not None:
        lines.append(f"\n{_n(later.count, 'more occurrence')}{'+' if later.capped else ''} after "
                     f"this window, the next {_local(later.first.due, later.first.tz_name)} "
                     f"({later.first.job_id} {later.first.part}); widen it with --until")
    if later.endless:
        lines.append(f"repeating with no end date: {', '.join(later.endless)}")
    return "\n".join(lines)


def upcoming_lines(cfg: config.Config, now: datetime, count: int = 8) -> list[str]:
    """A short plan for the start of `oyez run`: the next posts, local time and text.

    A recurring post shows only its next time, so one weekly rule cannot hide
    the live chat next month.
    """
    coming = plan.upcoming(cfg, now, count, per_rule=1)
    if not coming:
        return ["coming up: nothing (every post in the file is in the past or a draft)"]
    rules = {p.id: p.cron_text for p in cfg.posts if p.cron_text}
    lines = [f"coming up (the next {_n(len(coming), 'post')}; `oyez plan` lists them all):"]
    for o in coming:
        part = "" if o.part == "post" else f" {o.part}"
        repeats = f" (repeats: {rules[o.job_id]})" if o.job_id in rules else ""
        lines.append(f"  {_local(o.due, o.tz_name)}  {o.job_id}{part} -> {o.target}{repeats}: "
                     f"{_short(o.text, 60)}")
    return lines


def past_notes(cfg: config.Config, now: datetime, db: str | Ledger) -> list[str]:
    """One-off posts whose time has passed and that never went out: they will not be sent."""
    past = plan.past_one_offs(cfg, now)
    ledger = _ledger(db) if past else None
    sent = set()
    if ledger is not None:
        sent = {d.key for d in ledger.deliveries(dry_run=False, since=min(p.at for p in past if p.at))
                if d.status == "sent"}
    return [f"{cfg.path}: post {p.id!r} at {_local(p.at, p.tz)} is in the past: it will not be "
            "sent (give it a future time, or remove it)"
            for p in past if p.at and not all(f"post:{p.id}:{t}" in sent for t in p.targets)]


def history_rows(db: str | Ledger, limit: int, dry_run: bool | None = None) -> list[dict[str, Any]]:
    """The newest deliveries in the ledger (real and dry-run ones unless `dry_run` says)."""
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
        status = f"{r['status']} (dry run)" if r["dry_run"] else r["status"]
        if r["dry_run"] and r["status"] == "sent":
            detail = f"printed, not posted ({r['lateness_ms']} ms after its time)"
        lines.append(f"{r['due'][:19]:<20} {status:<27} {r['attempts']:>3}  "
                     f"{r['job'] + ' ' + r['part']:<36} {r['target']:<16} {detail}")
    return "\n".join(lines)


def reload_rows(db: str | Ledger, limit: int) -> list[dict[str, Any]]:
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
        lines.append(f"{r['at'][:19]}  {r['path']}  {what}")
        if r["errors"]:
            lines += [f"    {e}" for e in r["errors"].splitlines()]
    return "\n".join(lines)


def running_vs_disk(config_path: str, ledger: Ledger) -> list[str]:
    """What the daemon runs, and whether the file on disk is it (and if not, why)."""
    reloads = ledger.reloads(200)
    good = next((r for r in reloads if r.ok), None)
    if good is None:
        return ["last loaded: nothing yet"]
    lines = [f"last loaded: {good.path} as it was at {good.at:%Y-%m-%d %H:%M:%S} UTC"]
    try:
        disk = hashlib.sha256(Path(config_path).read_bytes()).hexdigest()
    except OSError as exc:
        what = "is missing" if isinstance(exc, FileNotFoundError) else "cannot be read"
        return [*lines, f"on disk: {config_path} {what} ({exc.strerror}): the daemon keeps "
                        "running the schedule it last loaded"]
    if good.digest == disk:
        return [*lines, f"on disk: {config_path} is the running schedule"]
    bad = next((r for r in reloads if r.digest == disk and not r.ok), None)
    if bad is None:
        # whether a daemon is alive to load it is not known here: say what happens either way
        return [*lines, f"on disk: {config_path} differs and has not been loaded: a running "
                        "daemon loads a saved file within seconds; otherwise `oyez run` will"]
    return [*lines, f"on disk: {config_path} is NOT running: invalid since "
                    f"{bad.at:%Y-%m-%d %H:%M:%S} UTC:",
            *(f"    {e}" for e in (bad.errors or "").splitlines())]


def disk_note(config_path: str, db: str) -> list[str]:
    """`running_vs_disk` when a daemon has used this database and runs something else."""
    ledger = _ledger(db)
    if ledger is None:
        return []
    lines = running_vs_disk(config_path, ledger)
    return [] if len(lines) == 2 and lines[1].endswith("is the running schedule") else lines


def alive(daemon: DaemonRow, now: datetime) -> bool:
    """The one rule for "running": a heartbeat within the last 30 s."""
    return now - daemon.heartbeat_at <= STALE_AFTER


def daemon_rows(ledger: Ledger, now: datetime) -> list[dict[str, Any]]:
    """Every daemon that has used the ledger, running (`alive`) or stale."""
    from sqlalchemy.exc import OperationalError, ProgrammingError

    try:
        daemons = ledger.daemons()
    except (OperationalError, ProgrammingError):  # a ledger from before heartbeats: none ran
        return []
    return [
        {"node": d.node, "host": d.host, "pid": d.pid, "version": d.version, "dry_run": d.dry_run,
         "started_at": _iso(d.started_at), "heartbeat_at": _iso(d.heartbeat_at),
         "alive": alive(d, now), "config_digest": d.config_digest,
         "heartbeat_age_s": int((now - d.heartbeat_at).total_seconds())}
        for d in daemons
    ]


@dataclass(frozen=True)
class Disk:
    """jobs.yaml as it is on disk now: its config if valid, else why not."""

    path: str
    digest: str | None
    config: config.Config | None
    problems: tuple[str, ...] = ()  # located errors, from parsing it or from the daemon's reload


_parsed: dict[str, tuple[str, config.Config | ConfigError]] = {}  # path -> (digest, result)
_parsed_lock = threading.Lock()


def read_disk(config_path: str, db: str | Ledger | None) -> Disk:
    """Read and validate jobs.yaml (missing variables allowed, as in `oyez plan`).

    A file that parses but that the daemon refused (e.g. a variable missing in its
    environment) carries the daemon's errors. The last parse is kept per path, so a
    page polled every few seconds re-validates only when the file changes.
    """
    name = os.path.basename(config_path)
    try:
        raw = Path(config_path).read_bytes()
    except OSError as exc:
        return Disk(config_path, None, None, (f"{name}:0: cannot read: {exc.strerror}",))
    digest = hashlib.sha256(raw).hexdigest()
    with _parsed_lock:
        cached = _parsed.get(config_path)
    if cached is not None and cached[0] == digest:
        parsed = cached[1]
    else:
        try:
            parsed = config.parse(raw, name=name, path=config_path, strict_env=False)
        except ConfigError as exc:
            parsed = exc
        with _parsed_lock:
            _parsed[config_path] = (digest, parsed)
    if isinstance(parsed, ConfigError):
        return Disk(config_path, digest, None, tuple(parsed.problems))
    ledger = None if db is None else _ledger(db)
    last = None if ledger is None else next(
        (r for r in ledger.reloads(200) if r.digest == digest), None)
    refused = () if last is None or last.ok else tuple((last.errors or "").splitlines())
    return Disk(config_path, digest, parsed, refused)


def _recent_failures(ledger: Ledger, now: datetime) -> Counter[str]:
    """Deliveries that failed or were missed in the last 24 h, by status."""
    from sqlmodel import col, select

    from .ledger import Delivery

    with ledger.session() as s:
        return Counter(s.exec(select(Delivery.status).where(
            Delivery.dry_run == False,  # noqa: E712 (SQL, not Python)
            col(Delivery.status).in_(("failed", "missed")),
            col(Delivery.updated_at) >= now - RECENT)).all())


def attention(config_path: str, db: str | Ledger, now: datetime) -> list[str]:
    """Why someone should look, or [] when all is well.

    The one set of rules behind `oyez status`'s exit status and /healthz: no
    daemon heartbeat for 30 s, the file on disk invalid, a target unhealthy, a
    delivery failed or missed in the last 24 h. Reasons never carry post text.
    """
    ledger = _ledger(db)
    if ledger is None:
        return ["no ledger yet: no daemon has run on this database"]
    reasons = []
    running = [d for d in daemon_rows(ledger, now) if d["alive"]]
    if not running:
        reasons.append(f"no daemon heartbeat in the last {STALE_AFTER.seconds} s")
    elif all(d["dry_run"] for d in running):
        reasons.append("only dry-run daemons are running: nothing is being published")
    disk = read_disk(config_path, ledger)
    if disk.problems:
        reasons.append(f"{config_path} on disk is invalid ({_n(len(disk.problems), 'problem')})")
    reasons += [f"target {name} is unhealthy: its credentials were refused"
                for name in sorted(_unhealthy(ledger, disk.config))]
    reasons += [f"{_n(n, 'delivery', 'deliveries')} {outcome} in the last 24 h"
                for outcome, n in sorted(_recent_failures(ledger, now).items())]
    return reasons


def _n(count: int, noun: str, plural: str | None = None) -> str:
    return f"{count} {noun if count == 1 else plural or noun + 's'}"


def status(config_path: str, db: str | Ledger, now: datetime) -> dict[str, Any]:
    """Everything `oyez status` and the status page show, from one reading."""
    from .ledger import safe_url

    ledger = _ledger(db)
    if ledger is None:
        return {"ledger": None, "attention": attention(config_path, db, now)}
    disk = read_disk(config_path, ledger)
    refused = ledger.unhealthy()
    unhealthy = _unhealthy(ledger, disk.config)  # a refusal of settings since changed is over
    names = sorted(set(disk.config.targets if disk.config else ()) | unhealthy)
    return {
        "ledger": safe_url(ledger.url),
        "attention": attention(config_path, ledger, now),
        "daemons": daemon_rows(ledger, now),
        "schedule": running_vs_disk(config_path, ledger),
        "problems": list(disk.problems),
        "targets": [
            {"name": name, "healthy": name not in unhealthy,
             "since": _iso(refused[name].since) if name in unhealthy else None,
             "reason": refused[name].reason if name in unhealthy else None}
            for name in names
        ],
        "counts": dict(sorted(Counter(d.status for d in ledger.deliveries(dry_run=False)).items())),
        "dry_counts": dict(sorted(Counter(d.status for d in ledger.deliveries(dry_run=True)).items())),
        "notes": past_notes(disk.config, now, ledger) if disk.config else [],
        "incidents": _incident_lines(ledger),
        "reloads": reload_rows(ledger, 20),
    }


def _incident_lines(ledger: Ledger) -> list[str]:
    """The incidents still open (alerts sent or due), one line each."""
    from .incidents import Incidents

    lines = []
    for incident in Incidents(ledger).still_open():
        told = f"alerted {incident.alerted_at:%Y-%m-%d %H:%M}Z" if incident.alerted_at else "not alerted yet"
        lines.append(f"incident {incident.key}: open since {incident.opened_at:%Y-%m-%d %H:%M}Z, "
                     f"seen {incident.count}x, {told}")
    return lines


def status_text(report: dict[str, Any], db: str) -> str:
    """Human-readable `status`."""
    if report["ledger"] is None:
        return f"no ledger at {db}: the daemon has not run here yet"
    daemons = report["daemons"]
    lines = [] if any(d["alive"] for d in daemons) else [
        "daemon: NONE RUNNING on this ledger (nothing is being sent)"]
    for d in daemons:
        what = (f"{d['node']}: host {d['host']}, pid {d['pid']}, oyez {d['version']}"
                f"{', DRY RUN (sends nothing)' if d['dry_run'] else ''}, since "
                f"{d['started_at'][:19]}Z, last heartbeat {d['heartbeat_age_s']}s ago")
        lines.append(f"daemon: running: {what}" if d["alive"] else
                     f"daemon: STALE (no heartbeat for {d['heartbeat_age_s']}s; it stopped without "
                     f"saying so, or cannot reach the ledger): {what}")
    lines += report["schedule"]
    lines += report["incidents"]
    lines += [f"target {t['name']}: UNHEALTHY since {t['since'][:16]}Z: {t['reason']}"
              for t in report["targets"] if not t["healthy"]]
    lines.append("deliveries: " + (", ".join(f"{n} {s}" for s, n in report["counts"].items())
                                   or "none"))
    if report["dry_counts"]:
        lines.append("dry-run deliveries (printed, not posted): "
                     + ", ".join(f"{n} {s}" for s, n in report["dry_counts"].items()))
    lines += report["notes"]
    lines += [f"needs attention: {reason}" for reason in report["attention"]] or ["all is well"]
    return "\n".join(lines)


def diff_text(cfg: config.Config, db: str, horizon: timedelta,
              against: config.Config | None = None) -> str:
    """What the daemon would do if `cfg` replaced the running file now, over the whole plan.

    Within the daemon's horizon the ledger says what is scheduled (and what
    was sent); beyond it the ledger holds nothing, so `cfg` is compared with
    `against`, else with the running file if it is still on disk as loaded.
    """
    now = clock.now()
    start, end = plan.ledger_window(cfg, now, horizon)
    ledger = _ledger(db)
    lines: list[str] = []
    old: config.Config | None
    if ledger is None:  # nothing has run here: all of it is new, unless compared with a file
        since, old = start, against or _EMPTY
    else:
        lines += _ledger_diff(cfg, ledger, start, end, now)
        since, old = end, against or _running_config(cfg, ledger)
    if old is None:
        lines.append(f"after {_local(end, cfg.timezone)}: not compared (the daemon schedules "
                     f"{horizon.days} days ahead and the file it runs has changed on disk; "
                     "compare with a copy of it: oyez diff --against OLD.yaml)")
        return "\n".join(lines)
    pairs, rules = plan.compare(old, cfg, since)
    for before, after in pairs:
        if after is None:
            assert before is not None
            lines.append(_change("-", before.due, before, before.text) + "  (removed)")
        else:
            lines.append(_change("~" if before else "+", after.due, after, after.text,
                                 before.due if before else None, before.text if before else None))
    lines += [_rule_change(a, b, max(since, now)) for a, b in rules]
    return "\n".join(lines) or "no changes"


_EMPTY = config.Config("", "", ZoneInfo("UTC"), {}, (), ())


def _ledger_diff(cfg: config.Config, ledger: Ledger, start: datetime, end: datetime,
                 now: datetime) -> list[str]:
    """The sync a reload would do, previewed (read only), in words."""
    dry = not ledger.deliveries(dry_run=False, limit=1) and bool(ledger.deliveries(dry_run=True, limit=1))
    occurrences = {o.key: o for o in plan.expand(cfg, start, end)}
    result = ledger.sync(occurrences.values(), end, dry_run=dry, now=now, preview=True)
    lines = ["(compared with the dry run: no real run has used this ledger yet)"] if dry else []
    lines += [_change("+", occurrences[k].due, occurrences[k], occurrences[k].text)
              for k in result.added]
    lines += [_change("-", d.due_at, d, d.text) + "  (cancelled)" for d in result.cancelled]
    for key in result.changed:
        was_due, was_text = result.before[key]
        occ = occurrences[key]
        lines.append(_change("~", occ.due, occ, occ.text, was_due, was_text))
    lines += [_change("!", occurrences[k].due, occurrences[k], occurrences[k].text)
              + "  was already sent: its new time will not send it again (give it a new id)"
              for k in result.resend_refused]
    return lines


def _change(sign: str, due: datetime, o: plan.Occurrence | Delivery, text: str,
            was_due: datetime | None = None, was_text: str | None = None) -> str:
    """One line per change: local time, job and part, target, then what changed."""
    tz = o.tz_name if isinstance(o, plan.Occurrence) else o.tz
    part = "" if o.part == "post" else f" {o.part}"
    head = f"{sign} {_local(due, tz)}  {o.job_id}{part} -> {o.target}"
    if sign != "~":
        return f"{head}: {_short(text)}"
    lines = [head]
    if was_due is not None and was_due != due:
        lines.append(f"    time: {_local(was_due, tz)} -> {_local(due, tz)}")
    if was_text is not None and was_text != text:
        # whole texts: the difference may be anywhere in them
        lines.append(f"    text: {_short(was_text, None)} -> {_short(text, None)}")
    if len(lines) == 1:
        lines.append("    link, image or grace changed")
    return "\n".join(lines)


def _rule_change(old: config.Post | None, new: config.Post | None, after: datetime) -> str:
    """A recurring post beyond the horizon, compared as a rule."""
    post = new or old
    assert post is not None
    when = f"after {_local(after, post.tz)}"
    if old is None or new is None:
        sign, what = ("+", "added") if old is None else ("-", "removed")
        return f"{sign} {post.id} ({post.cron_text}) {what}, {when}: {_short(post.message)}"
    fields = [(k, getattr(old, k), getattr(new, k)) for k in
              ("cron_text", "start", "until", "message", "targets", "link", "image", "grace", "tz")]
    changed = [f"    {k.removesuffix('_text')}: {_short(str(a), None)} -> {_short(str(b), None)}"
               for k, a, b in fields if a != b]
    return "\n".join([f"~ {post.id} ({post.cron_text}), {when}:", *changed])


def _short(text: str, width: int | None = 70) -> str:
    """`text` on one line, quoted, cut to `width` characters (None: whole)."""
    flat = " ".join(text.split())
    return repr(flat if width is None or len(flat) <= width else flat[:width - 1] + "\u2026")


def _running_config(cfg: config.Config, ledger: Ledger | None) -> config.Config | None:
    """The file the daemon runs, if still on disk as loaded (`cfg` itself if it is that file)."""
    good = next((r for r in ledger.reloads(200) if r.ok), None) if ledger else None
    if good is not None and good.digest == cfg.digest:
        return cfg
    if good is None or os.path.abspath(good.path) == os.path.abspath(cfg.path):
        return None
    try:
        old = config.load(good.path, strict_env=False)
    except ConfigError:
        return None
    return old if old.digest == good.digest else None


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


EXPIRY_WARNING = timedelta(days=7)


@dataclass(frozen=True)
class TokenCheck:
    """One row of `oyez check`: state is ok, `expires in N days`, invalid, `missing scope X`
    or unknown (the network could not be asked)."""

    target: str
    state: str
    detail: str

    @property
    def ok(self) -> bool:
        """True when nothing needs doing."""
        return self.state == "ok"


def check_tokens(cfg: config.Config, http: requests.Session, now: datetime, *,
                 expiring_only: bool = False) -> list[TokenCheck]:
    """Ask each target's network whether its token works, what it may do and when it expires.

    With `expiring_only` (the daemon's daily check), only targets whose adapter can say when
    its token expires: asking the others (a webhook's signed ping) would be noise.
    """
    return [_check_one(name, target, http, now) for name, target in cfg.targets.items()
            if not expiring_only or hasattr(adapters.get(target.adapter), "token_status")]


def _check_one(name: str, target: config.Target, http: requests.Session, now: datetime) -> TokenCheck:
    adapter = adapters.get(target.adapter)(target.settings, http)
    renew = "Fix: issue a new Page access token and update it in .env, then restart oyez"
    try:
        who = adapter.check()
    except AuthError as exc:
        return TokenCheck(name, "invalid", str(exc))
    except PublishError as exc:
        return TokenCheck(name, "unknown", f"could not ask: {exc}")
    if not isinstance(adapter, TokenInspector):
        return TokenCheck(name, "ok", f"{who}; expiry not known for {target.adapter}")
    try:
        status = adapter.token_status()
    except PublishError as exc:
        return TokenCheck(name, "unknown", f"{who}; could not ask when the token expires: {exc}")
    if not status.valid:
        return TokenCheck(name, "invalid", f"{status.problem}. {renew}")
    if status.missing_scopes:
        scopes = ", ".join(status.missing_scopes)
        return TokenCheck(name, f"missing scope {scopes}", f"{who}: the token may not publish. Fix: "
                          f"grant the app {scopes}, then issue a new Page access token for .env")
    if status.expires_at is None:
        return TokenCheck(name, "ok", f"{who}; never expires")
    left = status.expires_at - now
    days = max(0, math.ceil(left / timedelta(days=1)))
    when = f"expires {status.expires_at:%Y-%m-%d %H:%M}Z"
    if left > EXPIRY_WARNING:
        return TokenCheck(name, "ok", f"{who}; {when} (in {days} days)")
    return TokenCheck(name, f"expires in {days} day{'s' * (days != 1)}", f"{who}; {when}. {renew} "
                      "(a Page token from a long-lived user token does not expire)")


def check_text(rows: list[TokenCheck]) -> str:
    """`oyez check` as a table: target, token state, detail."""
    width = max([len("target"), *(len(r.target) for r in rows)])
    state = max([len("token"), *(len(r.state) for r in rows)])
    lines = [f"{'target':<{width}}  {'token':<{state}}  detail"]
    lines += [f"{r.target:<{width}}  {r.state:<{state}}  {r.detail}" for r in rows]
    return "\n".join(lines)
