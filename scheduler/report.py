"""What `oyez plan`, `history`, `status` and `diff` show: rows for JSON, text for people."""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import adapters

from . import clock, config, plan, times
from .errors import ConfigError, PublishError

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
        lines += [f"    {k}: {row[k]}" for k in ("link", "image") if row[k]]
    later = plan.beyond(cfg, end)
    if later.first is not None:
        lines.append(f"\n{_n(later.count, 'more occurrence')}{'+' if later.capped else ''} after "
                     f"this window, the next {_local(later.first.due, later.first.tz_name)} "
                     f"({later.first.job_id} {later.first.part}); widen it with --until")
    if later.endless:
        lines.append(f"repeating with no end date: {', '.join(later.endless)}")
    return "\n".join(lines)


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


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


def past_notes(cfg: config.Config, now: datetime, db: str) -> list[str]:
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


def history_rows(db: str, limit: int, dry_run: bool | None = None) -> list[dict[str, Any]]:
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
        status = f"{r['status']} (dry run)" if r["dry_run"] else r["status"]
        if r["dry_run"] and r["status"] == "sent":
            detail = f"printed, not posted ({r['lateness_ms']} ms after its time)"
        lines.append(f"{r['due'][:19]:<20} {status:<27} {r['attempts']:>3}  "
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
        lines.append(f"{r['at'][:19]}  {r['path']}  {what}")
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
        return ["last loaded: nothing yet"]
    lines = [f"last loaded: {good.path} as it was at {good.at:%Y-%m-%d %H:%M:%S} UTC"]
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


def status_text(config_path: str, db: str) -> str:
    """Is the file on disk what is running? Which targets are unhealthy? What is open?"""
    ledger = _ledger(db)
    if ledger is None:
        return f"no ledger at {db}: the daemon has not run here yet"
    lines = running_vs_disk(config_path, ledger)
    for name, health in sorted(ledger.unhealthy().items()):
        lines.append(f"target {name}: UNHEALTHY since {health.since:%Y-%m-%d %H:%M}Z: "
                     f"{health.reason}")
    for dry_run, title in ((False, "deliveries"), (True, "dry-run deliveries (printed, not posted)")):
        counts = Counter(d.status for d in ledger.deliveries(dry_run=dry_run))
        if counts or not dry_run:
            lines.append(f"{title}: " + (", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
                                         or "none"))
    try:
        cfg = config.load(config_path, strict_env=False)
    except ConfigError:
        return "\n".join(lines)  # already said above
    return "\n".join([*lines, *past_notes(cfg, clock.now(), db)])


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
