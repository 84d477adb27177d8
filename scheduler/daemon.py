"""The long-running daemon: jobs.yaml + ledger → APScheduler → Publisher.

The in-memory schedule is rebuilt from jobs.yaml and the ledger at every
start and reload; the ledger, not APScheduler, remembers what happened. A
periodic sweep sends anything due and unclaimed (covering clock jumps and
suspends), recovers deliveries abandoned in `sending`, and marks what is past
its window as `missed`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.metadata
import logging
import os
import signal
import socket
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import TextIO

from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy.exc import SQLAlchemyError

from adapters import http as web

from . import clock, config, entry, plan, report, times
from .alerts import ABANDONED, MISSED, RELOAD, TOKEN, UNHEALTHY, Alerts
from .delivery import Publisher
from .errors import ConfigError
from .incidents import Incidents
from .ledger import DaemonRow, Delivery, Ledger, Reload, SyncResult, out_of_date, safe_url
from .settings import Settings
from .systemd import Notifier

log = logging.getLogger(__name__)

try:
    VERSION = importlib.metadata.version("oyez")
except importlib.metadata.PackageNotFoundError:  # run from a source tree that was not installed
    VERSION = "unknown"

SETTLE_NS = 200_000_000  # a jobs.yaml younger than this may be half-written
RECHECK_S = 5.0
HEARTBEAT_S = 5.0  # how often the daemon's row in the ledger is refreshed
RETRY_APPLY_S = 2.0  # a reload the ledger refused is tried again this often
LOST_REPEAT_S = 60.0  # a lost ledger is said again this often


class Daemon:
    """One running oyez: owns the scheduler, the publisher and the current config."""

    def __init__(self, config_path: str, settings: Settings, *, dry_run: bool = False,
                 out: TextIO = sys.stdout) -> None:
        self.path = Path(config_path)
        self.settings = settings
        self.dry_run = dry_run
        self.ledger = Ledger(settings.db, busy_seconds=settings.busy_seconds)
        self.http = web.session(pool_size=settings.workers)
        self.scheduler = BackgroundScheduler(
            timezone=UTC,
            job_defaults={"misfire_grace_time": None, "coalesce": True, "max_instances": 1},
            # one thread hands due deliveries to the publisher, so ties keep their order;
            # sweeps and refreshes run beside it and never delay a hand-off
            executors={"default": {"type": "threadpool", "max_workers": 1},
                       "maintenance": {"type": "threadpool", "max_workers": 2}},
        )
        self.alerts = Alerts(None if dry_run else Incidents(self.ledger), settings.node,
                             batch_seconds=settings.alert_batch_seconds,
                             poll_seconds=settings.sweep_seconds, timeout=settings.alert_timeout_seconds)
        self.publisher = Publisher(self.ledger, settings, self.http, dry_run=dry_run, out=out,
                                   wake=self.wake, alerts=self.alerts)
        self.systemd = Notifier()
        self.in_flight_at_exit = 0  # sends still going when run() returned: exit without them
        self.config: config.Config | None = None
        self.stop = threading.Event()
        self.reload_requested = threading.Event()
        self._lock = threading.Lock()  # one reload or refresh at a time
        self._done_stat: tuple[int, int, int] | None = None
        self._checked_at = 0.0
        self._settled_in = settings.watch_seconds  # seconds until a young jobs.yaml has settled
        self._rejected_digest: str | None = None
        self._unreadable: str | None = None  # why jobs.yaml cannot be read, said once
        self._retry_at = 0.0  # after a reload that could not be written: when to try again
        self._lost_said = 0.0
        self._swept = False  # no sweep has succeeded yet
        self._started = clock.now()

    # --- lifecycle -------------------------------------------------------
    def run(self) -> int:
        """Run until SIGTERM/SIGINT; return the exit status."""
        self._install_signals()  # first, so that a stop during start-up is a clean stop
        log.info("starting: reading %s", self.path)
        first = self.read()
        if self.stop.is_set():
            log.info("stopping (asked to while starting)")
            return 0
        if isinstance(first, ConfigError):
            for problem in first.problems:
                log.error("%s", problem)
            log.error("not starting: fix %s and run again", self.path)
            return 1
        warn_if_readable(self.path, Path(".env"))
        self.ledger.check_writable()
        self.scheduler.start(paused=True)
        try:
            self.apply(first, reason="start")
            for line in report.upcoming_lines(first, clock.now()):  # what this run will do
                log.info("%s", line)
            try:
                self.sweep()
            except SQLAlchemyError as exc:  # e.g. the ledger locked by another writer
                log.error("first sweep failed (%s); the next one in %ss tries again", _db_error(exc),
                          self.settings.sweep_seconds)
            self.scheduler.add_job(self.sweep, "interval", seconds=self.settings.sweep_seconds,
                                   id="sweep", executor="maintenance")
            self.scheduler.add_job(self.refresh, "interval", seconds=plan.REFRESH.total_seconds(),
                                   id="refresh", executor="maintenance")
            self.scheduler.add_job(self.heartbeat, "interval", seconds=HEARTBEAT_S, id="heartbeat",
                                   executor="maintenance")
            self.heartbeat(starting=True)
            if not self.dry_run:  # now, then daily
                self.scheduler.add_job(self.check_tokens, "interval", id="tokens",
                                       hours=self.settings.token_check_hours,
                                       next_run_time=clock.now(), executor="maintenance")
            self.alerts.start()
            self.scheduler.resume()
            log.info("oyez running%s on %s (node %s); watching %s",
                     " in DRY-RUN mode" if self.dry_run else "", safe_url(self.settings.db),
                     self.settings.node, self.path)
            self.systemd.notify("READY=1")
            self._main_loop()
            log.info("stopping")
        finally:
            self.systemd.notify("STOPPING=1")
            self.publisher.stopping.set()
            self.scheduler.shutdown(wait=False)
            self.alerts.stop()
            self.in_flight_at_exit = self.publisher.close(self.settings.stop_seconds)
            with contextlib.suppress(SQLAlchemyError):  # else it shows as stale, then is replaced
                self.ledger.forget_daemon(self.settings.node)
            if self.in_flight_at_exit:
                log.warning("%d sends still in flight after %gs: leaving them to crash recovery "
                            "(checked on the network at the next start)", self.in_flight_at_exit,
                            self.settings.stop_seconds)
            else:
                self.ledger.engine.dispose()
        return 0

    def _main_loop(self) -> None:
        """Watch jobs.yaml; tell systemd's watchdog we are alive (a hang here stops the pings)."""
        pinged = 0.0
        while not self.stop.wait(min(self.settings.watch_seconds, self._settled_in)):
            self._settled_in = self.settings.watch_seconds
            try:
                self.watch()
            except Exception:  # e.g. the database is locked for too long: try again next poll
                log.exception("reloading %s failed; still running the last good schedule",
                              self.path)
            interval = self.systemd.watchdog_seconds
            if interval is not None and time.monotonic() - pinged >= min(interval, 1.0):
                self.systemd.notify("WATCHDOG=1")
                pinged = time.monotonic()

    def heartbeat(self, *, starting: bool = False) -> None:
        """Say in the ledger that this daemon is alive, and what it runs (`oyez status`).

        At start, warn when another live daemon uses the same SQLite file: safe
        (claims make it so), but on one machine usually a mistake.
        """
        now = clock.now()
        try:
            self.ledger.heartbeat(DaemonRow(
                node=self.settings.node, host=socket.gethostname(), pid=os.getpid(), version=VERSION,
                dry_run=self.dry_run, started_at=self._started, heartbeat_at=now,
                config_digest=self.config.digest if self.config else None))
            others = [d for d in self.ledger.daemons() if d.node != self.settings.node
                      and report.alive(d, now)] if starting else []
        except SQLAlchemyError as exc:
            log.warning("could not write this daemon's heartbeat to the ledger: %s", _db_error(exc))
            return
        if others and self.settings.db.startswith("sqlite"):
            log.warning("another oyez daemon uses this ledger file: %s; several daemons on one "
                        "SQLite file never double-post, but on one machine that is usually a "
                        "mistake (stop one; for a fleet, share PostgreSQL)",
                        "; ".join(f"{d.node} on host {d.host}, pid {d.pid}, since "
                                  f"{d.started_at:%Y-%m-%d %H:%M:%S}Z" for d in others))

    def _install_signals(self) -> None:
        def stop(signum: int, _frame: FrameType | None) -> None:
            self.stop.set()

        def hup(_signum: int, _frame: FrameType | None) -> None:
            self.reload_requested.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, hup)
        for signum in entry.take_held():  # arrived while oyez was still importing
            (self.reload_requested if signum == signal.SIGHUP else self.stop).set()

    # --- configuration -----------------------------------------------------
    def read(self, raw: bytes | None = None) -> config.Config | ConfigError:
        """Validate the file on disk (or its bytes, if already read), reusing the running
        config's entries that did not change."""
        try:
            if raw is None:
                return config.load(self.path, strict_env=not self.dry_run, previous=self.config,
                                   remember=True)
            return config.parse(raw, name=str(self.path), path=str(self.path),
                                strict_env=not self.dry_run, previous=self.config, remember=True)
        except ConfigError as exc:
            return exc

    def watch(self) -> None:
        """Reload when the file changed and has settled, or on SIGHUP.

        A reload whose ledger update could not be written (the database locked
        for too long, a full disk) is not applied: the last good schedule keeps
        running and the reload is tried again until it succeeds.
        """
        try:
            st = os.stat(self.path)
            stat = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            stat = (0, 0, 0)
        forced = self.reload_requested.is_set()
        if not forced:
            if time.monotonic() < self._retry_at:
                return
            # an unchanged stat is re-checked by content now and then: on some mounted
            # volumes two quick same-size saves share one mtime
            if stat == self._done_stat and time.monotonic() - self._checked_at < RECHECK_S:
                return
            age = time.time_ns() - stat[0]
            if abs(age) < SETTLE_NS:  # written a moment ago: a save may still be in progress
                if age >= 0:  # look again the moment it has settled, not at the next poll
                    self._settled_in = (SETTLE_NS - age) / 1e9
                return
        self._done_stat = stat
        self._checked_at = time.monotonic()
        self.reload_requested.clear()
        try:
            raw = self.path.read_bytes()
        except OSError as exc:
            if self._unreadable != exc.strerror:  # once, not at every look
                self._unreadable = exc.strerror
                log.error("%s: cannot read (%s): still running the last good schedule; it is "
                          "loaded again when it is back", self.path, exc.strerror)
            return
        if self._unreadable is not None:
            log.info("%s is readable again", self.path)
            self._unreadable = None
        digest = hashlib.sha256(raw).hexdigest()
        running = self.config.digest if self.config else None
        if digest in (running, self._rejected_digest) and not forced:
            return
        loaded = self.read(raw)
        if isinstance(loaded, ConfigError):
            self._rejected_digest = digest
            for problem in loaded.problems:
                log.error("%s", problem)
            log.error("%s is invalid: still running the last good schedule (%s)",
                      self.path, (running or "?")[:12])
            self.alerts.raise_(RELOAD, str(self.path), "\n".join(loaded.problems))
            self.ledger.record_reload(Reload(at=clock.now(), node=self.settings.node,
                                             path=str(self.path), digest=digest, ok=False,
                                             errors="\n".join(loaded.problems)))
            return
        if loaded.digest != running or forced:
            try:
                self.apply(loaded, reason="reload")
            except SQLAlchemyError as exc:
                self._done_stat, self._retry_at = None, time.monotonic() + RETRY_APPLY_S
                log.error("%s is valid but the ledger could not be updated (%s): NOT applied, "
                          "still running the last good schedule (%s); trying again in %.0fs",
                          self.path, _db_error(exc), (running or "?")[:12], RETRY_APPLY_S)

    def apply(self, new: config.Config, *, reason: str) -> None:
        """Make the ledger and the schedule follow `new`, and record the reload.

        Nothing changes unless the ledger update commits: then `new` becomes the
        running config. Raises SQLAlchemyError when the ledger cannot be written.
        """
        with self._lock:
            changed = None if self.config is None or reason == "start" else \
                plan.changed_jobs(self.config, new)
            synced = self._sync(new, clock.now(), starting=reason == "start", jobs=changed)
            self.alerts.resolve(RELOAD, str(self.path), f"{self.path.name} valid again")
            self._rejected_digest = None
        for warning in new.warnings:
            log.warning("%s", warning)
        if reason != "start" and not new.posts and not new.live_events:
            log.warning("%s has no posts or live events: %d pending deliveries cancelled",
                        self.path, len(synced.cancelled))
        for key in synced.kept_text:
            log.warning("%s: its new text is not used: an earlier attempt may already have "
                        "published the old one, which is checked for first", key)
        for key in synced.resend_refused:
            log.warning("%s was already sent; its new time is ignored. To publish it again, "
                        "give it a new id in %s", key, self.path.name)
        for row in synced.settling:
            log.warning("%s was removed, but an earlier attempt may have published it: checking "
                        "%s before recording it cancelled", row.key, row.target)
        for job_id, count in synced.skipped.items():
            log.info("%s is new: its %d time(s) before now are not sent late or recorded as "
                     "missed", job_id, count)
        log.info("%s %s: %d added, %d changed, %d cancelled; %d open deliveries",
                 reason, self.path.name, len(synced.added), len(synced.changed),
                 len(synced.cancelled), synced.open)
        upcoming = synced.next
        if upcoming is not None:
            log.info("next: %s %s to %s at %s", upcoming.job_id, upcoming.part, upcoming.target,
                     f"{upcoming.due_at.astimezone(times.zone(upcoming.tz)):%a %Y-%m-%d %H:%M %Z}")
        try:
            self.ledger.record_reload(Reload(
                at=clock.now(), node=self.settings.node, path=str(self.path), digest=new.digest,
                ok=True, added=len(synced.added), cancelled=len(synced.cancelled),
                changed=len(synced.changed)))
        except SQLAlchemyError as exc:  # applied all the same: the deliveries are what count
            log.error("%s applied, but its reload record could not be written: %s", self.path,
                      _db_error(exc))

    def refresh(self) -> None:
        """Roll the planning window forward (new cron occurrences come into view)."""
        with self._lock:
            if self.config is not None:
                self._sync(self.config, clock.now())

    def _sync(self, cfg: config.Config, now: datetime, *, starting: bool = False,
              jobs: set[str] | None = None) -> SyncResult:
        """Sync the ledger with `cfg`, then make it the running config and schedule.

        After downtime (`starting`) the ledger is checked a day back, so what fell
        due meanwhile is sent late or recorded missed; while running, only as far
        back as a post may still go out. With `jobs` (a reload's changed entries),
        only their deliveries are synced and scheduled: the others' are as the
        last sync left them, and the refresh rolls their window forward.
        """
        start, end = plan.ledger_window(cfg, now, self.settings.horizon)
        since = start if starting else now - plan.longest_grace(cfg)
        planned = cfg if jobs is None else dataclasses.replace(
            cfg, posts=tuple(p for p in cfg.posts if p.id in jobs),
            live_events=tuple(e for e in cfg.live_events if e.id in jobs))
        occurrences = plan.expand(planned, since, end)
        with self.publisher.holding():  # deliveries claimed ahead follow the new file too
            wanted = {o.key: o for o in occurrences if not o.draft}
            self.publisher.disarm(
                row for row in self.publisher.armed() if (jobs is None or row.job_id in jobs)
                and (row.key not in wanted or out_of_date(row, wanted[row.key])))
            synced = self.ledger.sync(occurrences, end, dry_run=self.dry_run, now=now, since=since,
                                      jobs=jobs)
        self.publisher.use(cfg)
        self.alerts.use(cfg.alerts)
        self.config = cfg
        for row in (*synced.cancelled, *synced.settling):
            assert row.id is not None
            self._unschedule(row.id)
        for row in synced.active:
            self._schedule(row)
        return synced

    # --- scheduling --------------------------------------------------------
    def _schedule(self, row: Delivery) -> None:
        assert row.id is not None
        when = max(row.due_at, row.next_attempt_at or row.due_at)
        job = self.scheduler.get_job(_job_id(row.id))
        if job is None or job.next_run_time != when - self.settings.arm_lead:
            self.wake(row.id, row.target, when)

    def _unschedule(self, delivery_id: int) -> None:
        with contextlib.suppress(JobLookupError):  # already ran, or never scheduled
            self.scheduler.remove_job(_job_id(delivery_id))

    def wake(self, delivery_id: int, target: str, when: datetime) -> None:
        """Have the publisher take a delivery due at `when`, a moment ahead (`arm_lead`)."""
        self.scheduler.add_job(self.publisher.enqueue, "date", run_date=when - self.settings.arm_lead,
                               args=[delivery_id, target, when], id=_job_id(delivery_id),
                               replace_existing=True)

    def sweep(self) -> None:
        """Send what is due and unclaimed, recover abandoned claims, expire the too-late.

        Until one sweep has succeeded, claims held under this daemon's own node name are
        abandoned too: they can only be left over from an earlier process (OYEZ_NODE set, or pid 1).
        """
        now = clock.now()
        lost = self.ledger.lost()
        if lost is not None:
            if time.monotonic() - self._lost_said > LOST_REPEAT_S or not self._lost_said:
                self._lost_said = time.monotonic()
                log.critical("%s: NOTHING IS BEING SENT. Restore the file (or stop oyez, move the "
                             "new one aside and restart on the restored ledger): a restart on an "
                             "empty ledger would send again every post still within its grace",
                             lost)
            return
        for row in self.ledger.stale(dry_run=self.dry_run):
            reason = f"abandoned by {row.claimed_by} while sending; checking the network first"
            abandoned = not self._swept and row.claimed_by == self.settings.node
            if (abandoned or _abandoned(row, now, self.settings.node)) and \
                    self.ledger.release(row, now, reason):
                log.warning("%s was being sent by %s, which stopped: will check %s for it "
                                "before sending again", row.key, row.claimed_by, row.target)
                self._schedule(row)  # at its time and in its place: it may have been claimed ahead
                self.alerts.raise_(ABANDONED, row.key, f"{row.key} to {row.target}: {reason}",
                                   event=True)
        for row in self.ledger.expire(now, dry_run=self.dry_run):
            log.error("missed %s to %s: %s", row.key, row.target, row.error,
                      extra={"delivery": row.key, "target": row.target, "status": "missed"})
            self.alerts.raise_(MISSED, row.key, f"{row.key} to {row.target}: {row.error}", event=True)
        for row in self.ledger.unsettled(now, dry_run=self.dry_run):
            self.publisher.settle(row)
        for row in self.ledger.due(now, dry_run=self.dry_run):
            assert row.id is not None
            if not self.publisher.is_unhealthy(row.target) or self.dry_run:
                self.publisher.enqueue(row.id, row.target)
        self._swept = True

    def check_tokens(self) -> None:
        """Ask each target's network about its token; alert on trouble, resolve when fixed."""
        cfg = self.config
        if cfg is None:
            return
        for row in report.check_tokens(cfg, self.http, clock.now(), expiring_only=True):
            if row.ok:
                self.alerts.resolve(TOKEN, row.target, "token works again")
                if not self.publisher.is_unhealthy(row.target):  # its settings were changed
                    self.alerts.resolve(UNHEALTHY, row.target, "token works again")
            elif row.state != "unknown":  # a network that cannot be asked is not news
                log.warning("token of %s: %s: %s", row.target, row.state, row.detail)
                self.alerts.raise_(TOKEN, row.target, f"{row.target}: {row.state}: {row.detail}")


def _db_error(exc: SQLAlchemyError) -> str:
    """The database's own words, without SQLAlchemy's statement dump."""
    return str(getattr(exc, "orig", None) or exc).splitlines()[0]


def _job_id(delivery_id: int) -> str:
    """Zero-padded, because APScheduler orders jobs due at the same moment by id, as text."""
    return f"d{delivery_id:012d}"


def _abandoned(row: Delivery, now: datetime, node: str) -> bool:
    """A `sending` claim whose holder is gone: lease expired, or a dead process on this host."""
    if row.lease_until is not None and row.lease_until < now:
        return True
    holder = row.claimed_by or ""
    host, _, pid = holder.rpartition(":")
    our_host = node.rpartition(":")[0]
    if holder == node or host != our_host or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False



def warn_if_readable(*paths: Path) -> None:
    """Warn about files other users on this server can read (tokens live in .env)."""
    for path in paths:
        try:
            mode = path.stat().st_mode
        except OSError:
            continue
        if mode & 0o044:
            log.warning("%s is readable by other users on this server; fix: chmod 600 %s",
                        path, path)
