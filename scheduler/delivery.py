"""Sending one delivery, and the lanes that keep each target's posts in order.

`Publisher.enqueue(id, target, when)` is what the scheduler calls a moment
(OYEZ_ARM_SECONDS) before a post's instant: it only queues. A bounded thread pool
drains one lane per target, so posts to one target go out in order, many
targets go out at once, and a slow target holds one worker rather than the
scheduler's clock. A lane claims what it holds in one transaction ahead of
time ("armed"), then sends each at its instant: on time, only the send is left.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any, TextIO

import requests
from sqlalchemy.exc import SQLAlchemyError

import adapters
from adapters.base import Adapter, Message, Published, Steps, idempotent_for

from . import clock, times
from .alerts import FAILED, MISSED, UNHEALTHY, Alerts
from .config import Config, Target
from .errors import AuthError, PermanentError, PublishError, TransientError
from .ledger import Attempt, Delivery, Ledger
from .secrets import redact
from .settings import Settings

log = logging.getLogger(__name__)

SLOW_DOWN_AT = 90.0  # usage percentage from which a target is paced
PACE = {90.0: timedelta(seconds=5), 100.0: timedelta(seconds=60)}
# find_published looks for posts created from this long before the first attempt: the
# network's clock may be a little behind ours, and its times are whole seconds
CLOCK_SKEW = timedelta(minutes=1)
SETTLE_FOR = timedelta(hours=1)  # how long past a deadline an unknown outcome is still checked
PARENT_WAIT = timedelta(seconds=5)  # how often a comment or reply looks whether its parent went out
UNSENT = ("pending", "retry", "sending", "cancelling")  # a parent that may still go out
BATCH = 50  # the most deliveries of one lane claimed in one transaction
FINAL_SLEEP = 0.002  # seconds before an instant from which a lane sleeps rather than waits
SPIN = 0.0002  # and from which it spins


class LedgerSteps(Steps):
    """Steps an adapter reports, written to the delivery's ledger row as they happen."""

    def __init__(self, ledger: Ledger, row: Delivery, node: str) -> None:
        super().__init__(json.loads(row.steps) if row.steps else None)
        self.ledger, self.row, self.node = ledger, row, node

    def put(self, name: str, value: str) -> None:
        """Record the id, then keep it in the ledger before the adapter's next call."""
        super().put(name, value)
        if not self.ledger.record_steps(self.row, self.node, json.dumps(self.saved)):
            raise TransientError(f"{self.row.key}: claim lost while publishing (step {name})")


def message_for(row: Delivery, parent: Delivery | None = None, steps: Steps | None = None) -> Message:
    """The one place a delivery becomes a Message: what to post and which delivery it is.

    A comment or reply (`row.parent`) goes under its parent's post; if the parent did not
    go out, PermanentError: there is nothing to put it under.
    """
    reply_to = None
    if row.parent is not None:
        if parent is None or parent.status != "sent" or not parent.remote_id:
            state = parent.status if parent is not None else "not in the ledger"
            raise PermanentError(f"not posted: it belongs under {row.parent}, which is "
                                 f"{state}, so there is no post to put it under")
        reply_to = parent.remote_id
    images = tuple(row.images.splitlines()) if row.images else ()
    return Message(row.text, row.link, row.image, images, reply_to, steps or Steps(), key=row.key,
                   job_id=row.job_id, part=row.part, target=row.target, due=row.due_at,
                   first_attempt_at=row.first_attempt_at,
                   options=json.loads(row.options) if row.options else {})


class Publisher:
    """Claims, sends and records deliveries for the targets of the running config."""

    def __init__(self, ledger: Ledger, settings: Settings, http: requests.Session, *,
                 dry_run: bool, out: TextIO, wake: Callable[[int, str, datetime], None],
                 alerts: Alerts) -> None:
        self.ledger = ledger
        self.settings = settings
        self.dry_run = dry_run
        self.out = out
        self.wake = wake  # asks the scheduler to call enqueue again at a later time
        self.alerts = alerts
        self.http = http
        self.pool = ThreadPoolExecutor(settings.workers, thread_name_prefix="oyez-send")
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._lanes: dict[str, deque[tuple[int, datetime | None]]] = defaultdict(deque)
        self._busy: set[str] = set()
        self._queued: set[int] = set()
        self._targets: dict[str, Target] = {}
        self.digest: str | None = None  # of the jobs.yaml in use, recorded with each post sent
        self._adapters: dict[str, Adapter] = {}
        self._not_before: dict[str, datetime] = {}
        self._unhealthy: dict[str, str] = {}  # target -> reason, while its settings are unchanged
        self._in_flight = 0  # deliveries being worked on by the pool, for a bounded stop
        self._idle = threading.Condition(self._lock)
        self._armed: dict[int, Delivery] = {}  # claimed ahead, its instant not yet come
        self._disarmed = threading.Condition(self._lock)  # an armed delivery was given back
        self._arming = threading.Lock()  # claims ahead wait while a reload updates the ledger

    def use(self, config: Config) -> None:
        """Use this config's targets from now on; rebuild adapters whose settings changed."""
        targets = config.targets
        self.digest = config.digest
        # a dry run sends nothing, so it neither reads nor clears the real targets' health
        refused = {} if self.dry_run else self.ledger.unhealthy()
        with self._lock:
            self._adapters = {name: self._adapter(name, target) for name, target in targets.items()}
            for name, target in targets.items():
                health = refused.get(name)
                if health is not None and health.fingerprint == target.fingerprint:
                    if name not in self._unhealthy:
                        log.error("target %s is unhealthy since %s: %s — its posts wait until the "
                                  "token is fixed (update .env, then restart oyez)",
                                  name, f"{health.since:%Y-%m-%d %H:%M}Z", health.reason)
                    self._unhealthy[name] = health.reason
                else:
                    if health is not None:
                        log.info("target %s: settings changed, trying it again", name)
                        self.ledger.set_healthy(name)
                    self._unhealthy.pop(name, None)
            self._targets = dict(targets)

    def _adapter(self, name: str, target: Target) -> Adapter:
        old = self._targets.get(name)
        if old is not None and old.fingerprint == target.fingerprint:
            return self._adapters[name]  # unchanged: keep it
        return adapters.get(target.adapter)(target.settings, self.http)

    def is_unhealthy(self, target: str) -> bool:
        """True while `target`'s credentials are known to be refused."""
        return target in self._unhealthy

    def enqueue(self, delivery_id: int, target: str, when: datetime | None = None) -> None:
        """Queue a delivery due at `when` (None: now) on its target's lane (cheap; safe from
        any thread). Call it at most `settings.arm_lead` before `when`."""
        with self._lock:
            if delivery_id in self._queued or self.stopping.is_set():
                return
            self._queued.add(delivery_id)
            self._lanes[target].append((delivery_id, when))
            if target in self._busy:
                return
            self._busy.add(target)
        self.pool.submit(self._drain, target)

    def _drain(self, target: str) -> None:
        with self._lock:
            lane = self._lanes[target]
            when = lane[0][1]
            if when is not None:  # a burst is queued over some milliseconds: claim it in one go
                self._pause_until(when - self.settings.arm_lead / 2)
            batch = [lane.popleft() for _ in range(min(len(lane), BATCH))]
            self._queued.difference_update(delivery_id for delivery_id, _ in batch)
            self._in_flight += 1
        try:
            self._deliver_batch(target, batch)
        except Exception:  # a bug must not kill the lane; the sweep will retry the deliveries
            log.exception("deliveries %s: unexpected error", [i for i, _ in batch])
        finally:
            with self._lock:
                self._in_flight -= 1
                self._idle.notify_all()
                more = bool(self._lanes[target]) and not self.stopping.is_set()
                if not more:
                    self._busy.discard(target)
            if more:  # back of the pool's queue, so other targets get their turn
                self.pool.submit(self._drain, target)

    def _deliver_batch(self, target: str, batch: list[tuple[int, datetime | None]]) -> None:
        """Claim a lane's deliveries ahead in one transaction, then send each at its instant,
        in order. Those that could not be claimed ahead (a comment waiting for its post, a
        paced target) take the one-by-one path at their instant."""
        armed = {row.id: row for row in self._arm(target, [i for i, _ in batch])}
        for delivery_id, when in batch:
            row = armed.get(delivery_id)
            if row is None:
                if self._wait(when):
                    self.deliver(delivery_id, target)
            elif self._wait(max(row.due_at, row.next_attempt_at or row.due_at), row) and self._held(row):
                self._publish(row, None)

    def _held(self, row: Delivery) -> bool:
        """Whether this daemon still holds the claim on `row`, with at least half a lease left to
        send it in: a lane that fell behind renews its claims, lest another daemon take them over."""
        now = clock.now()
        if row.lease_until is not None and row.lease_until - now >= self.settings.lease / 2:
            return True
        if self.ledger.renew(row, self.settings.node, now, self.settings.lease):
            return True
        log.warning("%s: its claim was taken over while it waited its turn: left to the daemon "
                    "that has it", row.key)
        return False

    def _arm(self, target: str, ids: list[int]) -> list[Delivery]:
        """Claim what may be sent within `arm_lead` of now, if the target can be used now."""
        now = clock.now()
        not_before = self._not_before.get(target)
        if (not self.dry_run and target in self._unhealthy) or (not_before and not_before > now) \
                or self.ledger.lost():
            return []
        with self._arming:
            if self.stopping.is_set():
                return []
            rows = self.ledger.claim_ahead(ids, self.settings.node, now, now + self.settings.arm_lead,
                                           self.settings.lease)
            with self._lock:
                self._armed.update((row.id, row) for row in rows if row.id is not None)
        return rows

    def _wait(self, when: datetime | None, armed: Delivery | None = None) -> bool:
        """Wait until `when`. False if oyez is stopping, or `armed` was disarmed meanwhile;
        True once `armed` is due: from then on it is being sent and can no longer be disarmed."""
        with self._lock:
            while not self.stopping.is_set():
                if armed is not None and armed.id not in self._armed:
                    return False
                delay = 0.0 if when is None else (when - clock.now()).total_seconds()
                if delay <= 0:
                    if armed is not None:
                        del self._armed[armed.id or 0]
                    return True
                if delay > FINAL_SLEEP:
                    self._disarmed.wait(delay - FINAL_SLEEP)
                    continue
                self._lock.release()  # the last moments are slept, then spun: more punctual
                try:
                    if delay > SPIN:
                        time.sleep(delay - SPIN)
                    spun = time.monotonic() + SPIN  # bounded: the wall clock may be set back
                    while when is not None and clock.now() < when and time.monotonic() < spun:
                        pass  # a sleep this short overshoots (timer slack)
                finally:
                    self._lock.acquire()
            return False

    def _pause_until(self, when: datetime) -> None:
        """Wait (holding `_lock`, which waiting releases) until `when` or a stop."""
        while not self.stopping.is_set() and (delay := (when - clock.now()).total_seconds()) > 0:
            self._disarmed.wait(delay)

    @contextlib.contextmanager
    def holding(self) -> Iterator[None]:
        """No claims ahead meanwhile (while a reload updates the ledger)."""
        with self._arming:
            yield

    def armed(self) -> list[Delivery]:
        """Deliveries claimed ahead whose instant has not come (a reload may give them back)."""
        with self._lock:
            return list(self._armed.values())

    def disarm(self, rows: Iterable[Delivery]) -> None:
        """Give back claims taken ahead whose send has not started; the deliveries are open
        again in the ledger. Raises SQLAlchemyError (nothing is given back) if it cannot write."""
        with self._lock:  # decided as one with the instant's `_wait`
            taken = [row for row in rows if row.id in self._armed]
            self.ledger.unclaim(taken, self.settings.node, clock.now())
            for row in taken:
                del self._armed[row.id or 0]
            self._disarmed.notify_all()

    def deliver(self, delivery_id: int, target: str) -> None:
        """Send one delivery if it is still due, unclaimed and its target is usable."""
        now = clock.now()
        if self.stopping.is_set() or (not self.dry_run and target in self._unhealthy):
            return
        if self.ledger.lost():  # the daemon's sweep says so, loudly
            return
        not_before = self._not_before.get(target)
        parent = self.ledger.parent(delivery_id)
        if parent is not None and parent.status in UNSENT:  # a comment waits for its post
            not_before = max(not_before or now, now + PARENT_WAIT)
        if not_before is not None and not_before > now:
            self.ledger.defer(delivery_id, not_before, now)
            self.wake(delivery_id, target, not_before)
            return
        row = self.ledger.claim(delivery_id, self.settings.node, now, self.settings.lease)
        if row is not None:
            self._publish(row, parent)

    def _publish(self, row: Delivery, parent: Delivery | None) -> None:
        """Send a claimed delivery and record what became of it."""
        assert row.id is not None
        delivery_id = row.id
        with self._lock:  # the adapter and the settings it was built from, as one
            adapter = self._adapters.get(row.target)
            current = self._targets.get(row.target)
        fingerprint = current.fingerprint if current is not None else ""
        started = clock.now()
        lateness_ms = int((started - row.due_at).total_seconds() * 1000)
        try:
            message = message_for(row, parent, LedgerSteps(self.ledger, row, self.settings.node))
            if self.dry_run:
                outcome, published = "dry-run", self._print(row, message)
            elif adapter is None:
                raise PermanentError(f"target {row.target} is not defined in jobs.yaml")
            else:
                outcome, published = self._send(adapter, row, message)
        except PublishError as exc:
            self._failed(row, exc, started, lateness_ms, fingerprint)
            return
        except Exception as exc:  # a bug or a hostile reply: record it, never strand the claim
            log.exception("%s to %s: unexpected error", row.key, row.target)
            self._failed(row, TransientError(f"unexpected {type(exc).__name__}", ambiguous=True),
                         started, lateness_ms, fingerprint)
            return
        finished = clock.now()
        self.ledger.finish_soon(  # the lane goes on to its next post meanwhile
            row, self.settings.node,
            Attempt(delivery_id=delivery_id, number=row.attempts, node=self.settings.node,
                    started_at=started, finished_at=finished, outcome=outcome,
                    lateness_ms=lateness_ms),
            status="sent", remote_id=published.remote_id, permalink=published.url,
            sent_at=finished, error=None,
            uncertain=False, lateness_ms=lateness_ms, next_attempt_at=None, config_digest=self.digest)
        self._pace(row.target, published.usage, finished)
        if self.dry_run:  # nothing went out: say so in the words a reader expects
            log.info("would post %s to %s now (dry run: nothing was sent; %d ms after its time)",
                     row.key, row.target, lateness_ms, extra=_fields(row, "sent", lateness_ms))
        else:
            log.info("sent %s to %s as %s (%s; %d ms after its time)", row.key, row.target,
                     published.remote_id, outcome, lateness_ms, extra=_fields(row, "sent", lateness_ms))
            self.alerts.resolve(UNHEALTHY, row.target, "token works again: a post went out")

    def _send(self, adapter: Adapter, row: Delivery, message: Message) -> tuple[str, Published]:
        assert row.first_attempt_at is not None
        # within the adapter's idempotency window, publishing again is itself the safe check
        if row.uncertain and clock.now() >= row.first_attempt_at + idempotent_for(adapter):
            found = self._find(adapter, row, message)
            if found is not None:
                return "found", found
        return "sent", adapter.publish(message)

    def _find(self, adapter: Adapter, row: Delivery, message: Message) -> Published | None:
        """This delivery's post, if an earlier attempt published it.

        Only a post created since its first attempt and not recorded for
        another delivery counts: the same text may have been posted before
        (a cron rule, or a post given a new id to publish it again).
        """
        assert row.first_attempt_at is not None
        since = row.first_attempt_at - CLOCK_SKEW
        return adapter.find_published(message, since, self.ledger.remote_ids(row.target, since))

    def settle(self, row: Delivery) -> None:
        """Close a delivery that must not be tried again while an attempt's outcome is unknown:
        its window passed, or it was removed from jobs.yaml (`cancelling`).

        It is `sent` if the network has it, else `missed` (or `cancelled`); if the network
        cannot be asked, the next sweep tries again, for up to an hour.
        """
        now = clock.now()
        with self._lock:
            adapter = self._adapters.get(row.target)
        found, note = None, "not found on the network after an attempt with unknown outcome"
        if adapter is not None and not self.dry_run and row.first_attempt_at is not None:
            try:
                assert row.id is not None
                found = self._find(adapter, row, message_for(row, self.ledger.parent(row.id)))
            except PublishError as exc:
                if now < max(row.deadline, row.updated_at) + SETTLE_FOR:
                    return
                note = f"could not check the network: {redact(str(exc))}"
        if found is not None:
            note = "found on the network after an attempt with unknown outcome"
        if self.ledger.settle(row, now, found.remote_id if found else None, note):
            outcome = "cancelled" if row.status == "cancelling" else "missed"
            log_as = log.info if found or outcome == "cancelled" else log.error
            log_as("%s to %s: %s", row.key, row.target, "sent (" + note + ")" if found else
                   f"{outcome}: {note}", extra=_fields(row, "sent" if found else outcome))
            if not found and outcome == "missed":
                self.alerts.raise_(MISSED, row.key, f"{row.key} to {row.target}: {note}", event=True)

    def _print(self, row: Delivery, message: Message) -> Published:
        local = row.due_at.astimezone(times.zone(row.tz))
        lines = [f"DRY RUN {local:%Y-%m-%d %H:%M:%S %Z} ({row.due_at:%H:%M:%S}Z) -> {row.target}"
                 f"  [{row.job_id} {row.part}]"]
        lines += [f"  | {line}" for line in message.text.splitlines() or [""]]
        if message.link:
            lines.append(f"  link:  {message.link}")
        for image in message.all_images:
            lines.append(f"  image: {image}")
        if message.reply_to:
            lines.append(f"  under: {message.reply_to} (a comment or reply)")
        with self._lock:
            self.out.write("\n".join(lines) + "\n")
            self.out.flush()
        return Published(f"dry-run-{row.id}")

    def _failed(self, row: Delivery, exc: PublishError, started: datetime, lateness_ms: int,
                fingerprint: str) -> None:
        now = clock.now()
        error = redact(str(exc))
        kind = {AuthError: "auth", PermanentError: "permanent"}.get(type(exc), "transient")
        attempt = Attempt(delivery_id=row.id or 0, number=row.attempts, node=self.settings.node,
                          started_at=started, finished_at=now, outcome=kind, error=error,
                          lateness_ms=lateness_ms)
        values: dict[str, Any]
        if isinstance(exc, AuthError):
            values = {"status": "pending", "error": f"target unhealthy: {error}"}
            self._mark_unhealthy(row.target, error, now, fingerprint)
        elif isinstance(exc, TransientError) and row.attempts < self.settings.max_attempts:
            delay = self._backoff(row.attempts, exc.retry_after)
            retry_at = now + delay
            values = {"status": "retry", "error": error, "next_attempt_at": retry_at,
                      "uncertain": row.uncertain or exc.ambiguous}
            if exc.retry_after:
                self._not_before[row.target] = now + timedelta(seconds=exc.retry_after)
            log.warning("%s to %s: attempt %d failed, retrying in %.1fs: %s", row.key, row.target,
                        row.attempts, delay.total_seconds(), error,
                        extra=_fields(row, "retry", lateness_ms))
        else:
            if isinstance(exc, TransientError):
                error = f"gave up after {row.attempts} attempts: {error}"
            values = {"status": "failed", "error": error}
            log.error("%s to %s failed: %s", row.key, row.target, error,
                      extra=_fields(row, "failed", lateness_ms))
        recorded = self.ledger.finish(row, self.settings.node, attempt, **values)
        if recorded and values["status"] == "failed":  # only the claim's holder tells
            self.alerts.raise_(FAILED, row.key, f"{row.key} to {row.target}: {error}", event=True)
        if recorded and "next_attempt_at" in values:
            assert row.id is not None
            self.wake(row.id, row.target, values["next_attempt_at"])

    def _backoff(self, attempts: int, retry_after: float | None) -> timedelta:
        base = min(self.settings.retry_cap_seconds,
                   self.settings.retry_base_seconds * 2 ** min(max(attempts - 1, 0), 30))
        seconds = base * random.uniform(0.5, 1.0)
        return timedelta(seconds=max(seconds, retry_after or 0.0))

    def _mark_unhealthy(self, target: str, reason: str, now: datetime, fingerprint: str) -> None:
        """Hold `target` while the settings that were refused (`fingerprint`) are in use."""
        with self._lock:
            current = self._targets.get(target)
            if current is None or current.fingerprint != fingerprint:
                return  # its settings changed while the call was out: the new ones get a chance
            first = target not in self._unhealthy
            self._unhealthy[target] = reason
        if first:
            self.ledger.set_unhealthy(target, fingerprint, reason, now)
            log.error("target %s is unhealthy: %s — its posts are held (pending) until the token "
                      "is fixed: update it in .env, then restart oyez", target, reason)
            self.alerts.raise_(UNHEALTHY, target, f"{target}: {reason}\nFix: update its token in "
                               ".env, then restart oyez; its posts wait (pending) until then")

    def _pace(self, target: str, usage: float | None, now: datetime) -> None:
        if usage is None or usage < SLOW_DOWN_AT:
            return
        pause = PACE[100.0] if usage >= 100 else PACE[90.0]
        self._not_before[target] = now + pause
        log.warning("target %s: rate-limit usage at %.0f%%, pausing its posts for %ss",
                    target, usage, int(pause.total_seconds()))

    def close(self, timeout: float | None = None) -> int:
        """Stop taking work, drop queued work, wait up to `timeout` s (None: no limit) for
        sends in flight; return how many are still in flight (their claims are left to the
        crash-recovery path: the caller should exit without waiting for them)."""
        self.stopping.set()
        self.pool.shutdown(wait=False, cancel_futures=True)
        with self._arming, contextlib.suppress(SQLAlchemyError):  # else: checked at the next start
            self.disarm(self.armed())
        with self._lock:
            self._disarmed.notify_all()
            self._idle.wait_for(lambda: self._in_flight == 0, timeout)
            left = self._in_flight
        self.ledger.flush(timeout)
        if not left:
            self.http.close()
        return left


def _fields(row: Delivery, status: str, lateness_ms: int | None = None) -> dict[str, Any]:
    """Structured log fields (`--log-format json`) for a delivery's outcome."""
    return {"delivery": row.key, "target": row.target, "status": status, "lateness_ms": lateness_ms}


