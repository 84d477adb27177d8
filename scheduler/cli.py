"""The `oyez` command: parse options, call one library function, print."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import socket
import sys
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from dotenv import load_dotenv

from . import clock, config, entry, logs, plan, report, times
from .errors import ConfigError, OyezError
from .secrets import RedactingFilter
from .settings import Settings

DEFAULT_CONFIG = "jobs.yaml"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `oyez` console script."""
    load_dotenv(".env", override=False)  # the real environment wins
    args = _parser().parse_args(argv)
    if args.func is not cmd_run:
        entry.release()  # a stop signal that came while importing stops this command as usual
    try:
        _logging(Settings.from_env(log_level=args.log_level, log_format=args.log_format))
        return int(args.func(args))
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    except OyezError as exc:
        print(f"oyez: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="oyez", description="Publish scheduled social-media "
                                     "posts and live-event announcements on time.")
    levels, formats = ["DEBUG", "INFO", "WARNING", "ERROR"], ["text", "json"]
    parser.add_argument("--log-level", choices=levels,
                        help="log verbosity (env OYEZ_LOG_LEVEL; default INFO)")
    parser.add_argument("--log-format", choices=formats,
                        help="text lines, or one JSON object per line (env OYEZ_LOG_FORMAT; default text)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str, *, cfg: bool = True, db: bool = True) -> Any:
        p = sub.add_parser(name, help=help_text, description=help_text)
        # also after the command; SUPPRESS keeps the one given before it otherwise
        p.add_argument("--log-level", default=argparse.SUPPRESS, choices=levels,
                       help="log verbosity")
        p.add_argument("--log-format", default=argparse.SUPPRESS, choices=formats,
                       help="text lines, or JSON")
        if cfg:
            p.add_argument("-c", "--config", default=DEFAULT_CONFIG, help="jobs file (jobs.yaml)")
        if db:
            p.add_argument("--db", default=None,
                           help="SQLAlchemy database URL (env OYEZ_DB; default sqlite:///oyez.db)")
        return p

    p = command("validate", "Check jobs.yaml and print a one-line summary.")
    p.add_argument("files", nargs="*", metavar="FILE",
                   help="jobs files to check instead of -c (as a pre-commit hook passes them)")
    p.add_argument("--strict", action="store_true",
                   help="also require every ${VAR} to be set (on the server); else a note")
    p.set_defaults(func=cmd_validate)

    p = command("plan", "List every occurrence in a time window without sending anything.")
    p.add_argument("--from", dest="start",
                   help="start of the window: a time, a date or a duration from now (default: now)")
    p.add_argument("--until", dest="end",
                   help="end of the window: a time, a date (to its end) or a duration after "
                        "--from, e.g. 7d (default: 30d)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_plan)

    p = command("run", "Run the daemon: publish each post at its time.")
    p.add_argument("--dry-run", action="store_true",
                   help="print posts as they fall due instead of sending them")
    p.add_argument("--http", metavar="HOST:PORT", default=None,
                   help="also serve the read-only web page from the daemon (e.g. 127.0.0.1:8080)")
    p.set_defaults(func=cmd_run)

    p = command("web", "Serve the read-only web page: timeline, status, /healthz, /metrics, .ics.")
    p.add_argument("--bind", metavar="HOST:PORT", default="127.0.0.1:8080",
                   help="where to listen (default 127.0.0.1:8080; any other address needs "
                        "OYEZ_WEB_TOKEN)")
    p.set_defaults(func=cmd_web)

    p = command("export-ics", "Write the plan as an iCalendar feed (one event per post) to stdout.")
    p.add_argument("--from", dest="start", help="start of the window (default: 30 days ago)")
    p.add_argument("--until", dest="end", help="end of the window (default: 90 days on)")
    p.set_defaults(func=cmd_export_ics)

    p = command("history", "Show the ledger: what was sent, failed, missed or cancelled.", cfg=False)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--limit", type=int, default=50, help="rows to show (default 50)")
    p.add_argument("--reloads", action="store_true", help="show jobs.yaml reloads instead")
    p.add_argument("--dry-run", action="store_true", help="show only dry-run deliveries")
    p.set_defaults(func=cmd_history)

    p = command("status", "Show what the daemon is running, target health and open deliveries.")
    p.set_defaults(func=cmd_status)

    p = command("diff", "Show what a candidate jobs.yaml would add, cancel and change.")
    p.add_argument("--against", metavar="FILE",
                   help="compare with this jobs file beyond the days the daemon has scheduled "
                        "(default: the running file, if it is another file and unchanged)")
    p.set_defaults(func=cmd_diff)

    p = command("db", "Show the ledger's schema version, or upgrade it in place.", cfg=False)
    p.add_argument("action", choices=["current", "upgrade"],
                   help="current: where the ledger stands; upgrade: apply the migrations it lacks")
    p.set_defaults(func=cmd_db)

    p = command("check", "Ask each target's network whether its token works, may publish and "
                "when it expires (exit 1 if one needs attention).", db=False)
    p.set_defaults(func=cmd_check)

    p = command("alerts", "Send a test message to every channel in the alerts: section.", db=False)
    p.add_argument("action", choices=["test"], help="what to do: test")
    p.set_defaults(func=cmd_alerts)

    p = command("send", "Publish one post from jobs.yaml now (its scheduled time then sends nothing).")
    p.add_argument("id", help="the post's id in jobs.yaml")
    p.add_argument("--target", help="only to this target (default: all of the post's targets)")
    p.add_argument("--dry-run", action="store_true", help="print the post instead of sending it")
    p.set_defaults(func=cmd_send)

    p = command("import", "Append one-off posts from a CSV file (id, at, targets, message, link, "
                "image) to jobs.yaml, keeping its comments and layout.", db=False)
    p.add_argument("csv", help="the CSV file (UTF-8, with a header row)")
    p.set_defaults(func=cmd_import)
    return parser


def _logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logs.formatter(settings.log_format))
    handler.addFilter(RedactingFilter())
    logging.basicConfig(level=settings.log_level, handlers=[handler], force=True)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("apprise").setLevel(logging.WARNING)


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env(db=getattr(args, "db", None))


def cmd_validate(args: argparse.Namespace) -> int:
    failed = 0
    for path in args.files or [args.config]:
        try:
            cfg = config.load(path, strict_env=args.strict)
        except ConfigError as exc:
            print("\n".join(exc.problems), file=sys.stderr)
            failed = 1
            continue
        now = clock.now()
        count = plan.count(cfg, now, now + timedelta(days=30))
        print(f"{path}: OK: {_n(len(cfg.targets), 'target')}, {_n(len(cfg.posts), 'post')}, "
              f"{_n(len(cfg.live_events), 'live event')}, "
              f"{_n(count, 'occurrence')} in the next 30 days")
        for line in [*cfg.warnings, *report.past_notes(cfg, now, _settings(args).db)]:
            print(f"note: {line}", file=sys.stderr)
    return failed


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def cmd_plan(args: argparse.Namespace) -> int:
    for line in report.disk_note(args.config, _settings(args).db):  # the daemon may run another
        print(line, file=sys.stderr)
    cfg = config.load(args.config, strict_env=False)
    for warning in cfg.warnings:
        logging.getLogger("oyez").warning("%s", warning)
    now = clock.now()
    start, end = _window(args, cfg, now, timedelta(days=30))
    db = _settings(args).db
    rows = report.plan_rows(cfg, start, end, db)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(report.plan_text(rows, start, end, cfg))
        for line in report.past_notes(cfg, now, db):
            print(f"note: {line}")
    return 0


def _window(args: argparse.Namespace, cfg: config.Config, start: datetime,
            span: timedelta) -> tuple[datetime, datetime]:
    """The window --from/--until give, by default [start, start + span)."""
    begin = _when(args.start, cfg, clock.now(), times.day_start) if args.start else start
    end = _when(args.end, cfg, begin, times.day_end) if args.end else begin + span
    if end <= begin:
        raise OyezError(f"--until ({args.end}) must be after --from ({args.start or 'now'})")
    return begin, end


def _when(text: str, cfg: config.Config, base: datetime,
          day: Callable[[str, ZoneInfo], datetime]) -> datetime:
    """A time, a date (read by `day`, in the file's zone) or a duration after `base`."""
    with contextlib.suppress(ValueError):
        return base + times.duration(text)
    try:
        return day(text, cfg.timezone)
    except ValueError as exc:
        raise OyezError(f"{exc} (or a duration such as 7d)") from None


def cmd_run(args: argparse.Namespace) -> int:
    from .daemon import Daemon

    settings = _settings(args)
    daemon = Daemon(args.config, settings, dry_run=args.dry_run)  # the ledger exists from here
    page: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
    if args.http is not None:  # the page's modules (Jinja2, icalendar) cost ~10 MB: only with --http
        from .web import serving

        page = serving(args.config, settings, args.http)
    with page:  # bound (or refused) before it schedules anything
        status = daemon.run()
    if daemon.in_flight_at_exit:  # don't let the interpreter wait for their worker threads
        logging.shutdown()
        sys.stdout.flush()
        os._exit(status)
    return status


def cmd_web(args: argparse.Namespace) -> int:
    from .web import WebServer

    return WebServer(args.config, _settings(args), args.bind).run()


def cmd_export_ics(args: argparse.Namespace) -> int:
    from . import ics

    cfg = config.load(args.config, strict_env=False)
    now = clock.now()
    start, end = _window(args, cfg, now - ics.DEFAULT_BACK, ics.DEFAULT_BACK + ics.DEFAULT_AHEAD)
    sys.stdout.buffer.write(ics.feed(report.timeline_rows(cfg, start, end, _settings(args).db), now))
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    db = _settings(args).db
    if args.reloads:
        rows = report.reload_rows(db, args.limit)
        print(json.dumps(rows, indent=2) if args.json else report.reloads_text(rows))
    else:
        rows = report.history_rows(db, args.limit, True if args.dry_run else None)
        print(json.dumps(rows, indent=2) if args.json else report.history_text(rows))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    db = _settings(args).db
    state = report.status(args.config, db, clock.now())
    print(report.status_text(state, db))
    return 1 if state["attention"] else 0  # for cron and monitoring agents, like /healthz


def cmd_diff(args: argparse.Namespace) -> int:
    cfg = config.load(args.config, strict_env=False)
    settings = _settings(args)
    against = config.load(args.against, strict_env=False) if args.against else None
    print(report.diff_text(cfg, settings.db, settings.horizon, against))
    return 0


def cmd_db(args: argparse.Namespace) -> int:
    print(report.schema_text(_settings(args).db, upgrade=args.action == "upgrade"))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from adapters import http as web

    cfg = config.load(args.config)
    with web.session() as http:
        rows = report.check_tokens(cfg, http, clock.now())
    print(report.check_text(rows))
    return 0 if all(row.ok for row in rows) else 1


def cmd_alerts(args: argparse.Namespace) -> int:
    from . import alerts

    cfg = config.load(args.config)
    if not cfg.alerts:
        raise OyezError(f"{args.config} has no alerts: section (a list of Apprise URLs)")
    results = alerts.send(cfg.alerts, "oyez: test alert",
                          f"A test message from `oyez alerts test` on {socket.gethostname()}.",
                          _settings(args).alert_timeout_seconds)
    for i, (url, ok) in enumerate(zip(cfg.alerts, results, strict=True)):
        print(f"channel {i + 1} ({alerts.scheme(url)}): {'sent' if ok else 'FAILED'}")
    return 0 if all(results) else 1


def cmd_send(args: argparse.Namespace) -> int:
    from .sendnow import send_now

    cfg = config.load(args.config, strict_env=not args.dry_run)
    rows = send_now(cfg, _settings(args), args.id, args.target, clock.now(), dry_run=args.dry_run,
                    out=sys.stdout)
    for row in rows:
        outcome = row.remote_id if row.status == "sent" else row.error or "not sent"
        print(f"{row.key}: {row.status}: {outcome}")
    return 0 if all(row.status == "sent" for row in rows) else 1


def cmd_import(args: argparse.Namespace) -> int:
    from .importer import import_csv

    added = import_csv(args.csv, args.config)
    print(f"{args.config}: appended {_n(added, 'post')} from {args.csv}")
    return 0
