"""What `oyez plan`, `history`, `status` and `diff` show: rows for JSON, text for people."""

from __future__ import annotations

import hashlib
import math
import os
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests

import adapters
from adapters.base import TokenInspector

from . import clock, config, plan
from .errors import AuthError, PublishError
from .settings import Settings

if TYPE_CHECKING:  # the database layer is imported only by commands that open a ledger
    from .ledger import Delivery, Ledger


def _ledger(db: str) -> Ledger | None:
    """Open the ledger only if it exists: looking must not create a database."""
    if db.startswith("sqlite:///") and not os.path.exists(db.removeprefix("sqlite:///")):
        return None
    from .ledger import Ledger

    return Ledger(db)


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
        lines += [f"    {k}: {row[k]}" for k in ("link", "image") if row[k]]
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
            "config_digest": d.config_digest,
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
    try:
        disk = hashlib.sha256(Path(config_path).read_bytes()).hexdigest()
    except OSError as exc:
        disk = f"unreadable ({exc.strerror})"
    if good is None:
        return ["running: nothing loaded yet"]
    lines = [f"running: {good.path} {good.digest[:12] if good.digest else '?'} "
             f"(loaded {good.at:%Y-%m-%d %H:%M:%S}Z)"]
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


def status_text(config_path: str, db: str) -> str:
    """Is the file on disk what is running? Which targets are unhealthy? What is open?"""
    ledger = _ledger(db)
    if ledger is None:
        return f"no ledger at {db}: the daemon has not run here yet"
    lines = running_vs_disk(config_path, ledger)
    for name, health in sorted(ledger.unhealthy().items()):
        lines.append(f"target {name}: UNHEALTHY since {health.since:%Y-%m-%d %H:%M}Z: "
                     f"{health.reason}")
    from .incidents import Incidents

    for incident in Incidents(ledger).still_open():
        told = f"alerted {incident.alerted_at:%Y-%m-%d %H:%M}Z" if incident.alerted_at else "not alerted yet"
        lines.append(f"incident {incident.key}: open since {incident.opened_at:%Y-%m-%d %H:%M}Z, "
                     f"seen {incident.count}x, {told}")
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


def check_tokens(cfg: config.Config, http: requests.Session, now: datetime) -> list[TokenCheck]:
    """Ask each target's network whether its token works, what it may do and when it expires."""
    return [_check_one(name, target, http, now) for name, target in cfg.targets.items()]


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
