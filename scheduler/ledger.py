"""The ledger: every delivery, attempt, reload, target's health and incident, in SQL (SQLite by default).

A delivery moves  pending → sending → sent | retry | failed,  or to missed or
cancelled. `sending` is committed *before* the network call (`claim`), with a
conditional UPDATE that only one daemon can win, and the outcome is written
with a fencing check (`finish`), so the same statements are safe with several
daemons on one database (SQLite or PostgreSQL).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast
from urllib.parse import quote

from sqlalchemy import (
    Connection,
    DateTime,
    Engine,
    Table,
    TypeDecorator,
    UniqueConstraint,
    bindparam,
    case,
    delete,
    event,
    func,
    insert,
    or_,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError
from sqlmodel import Field, Session, SQLModel, col, create_engine, select

from . import migrations
from .errors import OyezError
from .plan import Occurrence

log = logging.getLogger(__name__)

ACTIVE = ("pending", "retry")
SYNC_TRIES = 5  # a sync that lost a race with a claim or another daemon looks again
OPEN = (*ACTIVE, "sending", "cancelling")  # not yet settled one way or the other


@dataclass
class _Outcome:
    """One `finish` call: what to write, and what became of it."""

    delivery: Delivery
    node: str
    attempt: Attempt
    values: dict[str, Any]
    soon: bool = False  # from finish_soon: nobody waits for it
    done: bool = False
    recorded: bool = False
    error: SQLAlchemyError | None = None

    def params(self) -> dict[str, Any]:
        """The parameters of `_outcome_update(sorted(values))` for this outcome."""
        return {**self.values, "_id": self.delivery.id, "_node": self.node,
                "_at": self.attempt.finished_at}


class _ClaimLost(Exception):
    """An outcome of a batch was not written: its claim is no longer held."""


def _record(engine: Engine, batch: list[_Outcome]) -> None:
    """Write `batch`'s outcomes in one transaction, setting each one's `recorded`.

    In the usual case every claim is still held, and outcomes alike in shape are
    written by one executemany each; if one was lost, the transaction is rolled
    back and each is written on its own, to tell which.
    """
    with contextlib.suppress(_ClaimLost), engine.begin() as conn:
        shapes: dict[tuple[str, ...], list[_Outcome]] = {}
        for outcome in batch:
            shapes.setdefault(tuple(sorted(outcome.values)), []).append(outcome)
        for keys, alike in shapes.items():
            if conn.execute(_outcome_update(keys), [o.params() for o in alike]).rowcount != len(alike):
                raise _ClaimLost
        conn.execute(insert(_table(Attempt)), [o.attempt.model_dump(exclude={"id"}) for o in batch])
        for outcome in batch:
            outcome.recorded = True
        return
    with engine.begin() as conn:
        for outcome in batch:
            keys = tuple(sorted(outcome.values))
            outcome.recorded = conn.execute(_outcome_update(keys), outcome.params()).rowcount == 1
        recorded = [o.attempt.model_dump(exclude={"id"}) for o in batch if o.recorded]
        if recorded:
            conn.execute(insert(_table(Attempt)), recorded)


@functools.cache
def _outcome_update(keys: tuple[str, ...]) -> Any:
    """UPDATE setting columns `keys` of a delivery, if `_node` still holds its claim."""
    return update(_D).where(*_claimed_by(bindparam("_id"), bindparam("_node"))).values(
        lease_until=None, updated_at=bindparam("_at"), **{k: bindparam(k) for k in keys})


class _Changed(Exception):
    """A row changed between a sync's read and its write."""


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, whatever the database keeps."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def _when(**kw: Any) -> Any:
    return Field(sa_type=UTCDateTime, **kw)


class Delivery(SQLModel, table=True):
    """One message to one target at one instant, and what became of it."""

    id: int | None = Field(default=None, primary_key=True)
    key: str
    dry_run: bool = False
    job_id: str = Field(index=True)
    part: str
    target: str = Field(index=True)
    tz: str
    due_at: datetime = _when(index=True)
    deadline: datetime = _when()
    status: str = Field(default="pending", index=True)
    attempts: int = 0
    next_attempt_at: datetime | None = _when(default=None)
    uncertain: bool = False  # an attempt's outcome is unknown: look on the network first
    text: str
    link: str | None = None
    image: str | None = None
    options: str | None = None  # JSON object: network options (alt, visibility, ...), event fields
    images: str | None = None  # every image, one per line, when the post has several
    parent: str | None = None  # key of the delivery this one is a comment or reply under
    steps: str | None = None  # JSON: ids earlier attempts created on the network (Message.steps)
    permalink: str | None = None
    remote_id: str | None = None
    error: str | None = None
    lateness_ms: int | None = None
    config_digest: str | None = None  # the jobs.yaml running when it was sent
    claimed_by: str | None = None
    lease_until: datetime | None = _when(default=None)
    first_attempt_at: datetime | None = _when(default=None)
    sent_at: datetime | None = _when(default=None)
    created_at: datetime = _when()
    updated_at: datetime = _when()

    __table_args__ = (UniqueConstraint("key", "dry_run"),)


class Attempt(SQLModel, table=True):
    """One try at sending a delivery."""

    id: int | None = Field(default=None, primary_key=True)
    delivery_id: int = Field(index=True, foreign_key="delivery.id")
    number: int
    node: str
    started_at: datetime = _when()
    finished_at: datetime = _when()
    outcome: str  # sent, found, transient, permanent, auth, dry-run
    error: str | None = None
    lateness_ms: int


class Reload(SQLModel, table=True):
    """One reading of jobs.yaml by a daemon: what it found and what changed."""

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = _when()
    node: str
    path: str
    digest: str | None
    ok: bool
    added: int = 0
    cancelled: int = 0
    changed: int = 0
    errors: str | None = None


class TargetHealth(SQLModel, table=True):
    """A target whose credentials were refused, until its settings change."""

    name: str = Field(primary_key=True)
    fingerprint: str
    reason: str
    since: datetime = _when()


class DaemonRow(SQLModel, table=True):
    """One running daemon: who, where, since when, and its last heartbeat."""

    __tablename__ = "daemon"
    node: str = Field(primary_key=True)
    host: str
    pid: int
    version: str
    dry_run: bool = False
    started_at: datetime = _when()
    heartbeat_at: datetime = _when()
    config_digest: str | None = None


class Incident(SQLModel, table=True):
    """Something a person must hear about, once: opened, maybe counted again, resolved.

    `key` is kind:subject (e.g. `unhealthy:page-a`, `failed:post:x:page-a`). The
    alert columns are claimed by a conditional UPDATE, so one daemon sends each
    alert (see scheduler/incidents.py).
    """

    key: str = Field(primary_key=True)
    kind: str
    subject: str
    detail: str
    count: int = 1  # times raised while open
    opened_at: datetime = _when()
    last_seen_at: datetime = _when()
    resolved_at: datetime | None = _when(default=None)
    resolution: str | None = None
    alerted_at: datetime | None = _when(default=None)  # the "opened" alert was claimed
    resolve_alerted_at: datetime | None = _when(default=None)  # the "resolved" alert was claimed
    alerted_by: str | None = None


@dataclass
class SyncResult:
    """What `Ledger.sync` did."""

    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    cancelled: list[Delivery] = field(default_factory=list)
    active: list[Delivery] = field(default_factory=list)
    settling: list[Delivery] = field(default_factory=list)  # removed, but an attempt may have published
    skipped: dict[str, int] = field(default_factory=dict)  # new rule -> its fires before now
    resend_refused: list[str] = field(default_factory=list)
    kept_text: list[str] = field(default_factory=list)
    before: dict[str, tuple[datetime, str]] = field(default_factory=dict)  # key: old (due, text)
    open: int = 0  # open deliveries due before `until`, of every job (`active` may hold fewer)
    next: Delivery | None = None  # the first of them




class Ledger:
    """Access to the ledger database; every method is one short transaction."""

    def __init__(self, url: str, *, busy_seconds: float = 30.0, readonly: bool = False) -> None:
        """Open the ledger at `url`, creating it or upgrading its schema in place.

        A `readonly` ledger is opened so that the database refuses writes
        (SQLite `mode=ro`, PostgreSQL read-only transactions), creates and
        upgrades nothing, and is refused unless its schema is the newest.
        Raises OyezError.
        """
        self.url = url
        self._write_lock = threading.Lock()
        self._outcomes: list[_Outcome] = []  # waiting to be committed (`finish`, `finish_soon`)
        self._outcomes_ready = threading.Condition()
        self._unwritten = 0  # given to finish/finish_soon, not yet committed
        self._writer: threading.Thread | None = None  # commits finish_soon's outcomes
        self._file = _sqlite_file(url)
        try:
            self.engine = make_engine(url, busy_seconds, readonly=readonly)
            self._write_engine = self.engine.execution_options(oyez_write=True)
            if not readonly:
                before, after = migrations.upgrade(self.engine, safe_url(url))
                if before not in (None, after):
                    log.warning("ledger %s upgraded from schema %s to %s", safe_url(url), before, after)
            else:
                with self.engine.connect() as conn:
                    version = migrations.check(conn, safe_url(url))
                if version != migrations.head():
                    raise OyezError(f"the ledger {safe_url(url)} has schema version {version or 'none'}, "
                                    f"this oyez needs {migrations.head()}: run `oyez db upgrade` (or "
                                    "start `oyez run`, which upgrades it)")
        except SQLAlchemyError as exc:
            raise OyezError(f"cannot open the ledger database {safe_url(url)}: "
                            f"{type(exc).__name__}: {exc.args[0] if exc.args else ''}") from None
        self._identity = _identity(self._file)

    def check_writable(self) -> None:
        """Raise OyezError, naming the file and what to fix, if this process cannot write here."""
        try:
            with self.transaction() as conn:
                conn.exec_driver_sql("DELETE FROM reload WHERE 1 = 0")
        except OperationalError as exc:
            where = self._file or safe_url(self.url)
            hint = ""
            if self._file is not None:
                folder = os.path.dirname(os.path.abspath(self._file))
                hint = (f"; the user running oyez (uid {os.getuid()}) needs write permission on "
                        f"{self._file} and on its folder {folder} (SQLite writes -wal and -shm "
                        "files beside it)")
            raise OyezError(f"cannot write the ledger {where}: {exc.orig}{hint}") from None

    def lost(self) -> str | None:
        """Why the SQLite file this ledger opened is no longer the one on disk, else None.

        A deleted or replaced ledger would be written to in vain (the process keeps
        the unlinked file open), and the next start would send again everything
        still within grace: the daemon stops sending when this says so.
        """
        if self._file is None:
            return None
        now = _identity(self._file)
        if now == self._identity:
            return None
        if now is None:
            return f"the ledger file {self._file} was deleted"
        return f"the ledger file {self._file} was replaced by another file"

    def session(self) -> Session:
        """A new session for reading (one per unit of work, per thread)."""
        return Session(self.engine, expire_on_commit=False)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A Core connection in one write transaction, for the hot path (see `writing`)."""
        with self._write_lock, self._write_engine.begin() as conn:
            yield conn

    @contextlib.contextmanager
    def writing(self) -> Iterator[Session]:
        """A session for one write transaction.

        Threads of this process take turns here instead of in SQLite, whose
        busy handler sleeps in steps of milliseconds; the transaction begins
        IMMEDIATE, so a read that leads to a write cannot fail half-way when
        another daemon wrote in between.
        """
        with self._write_lock, Session(self._write_engine, expire_on_commit=False) as s:
            yield s

    def sync(self, occurrences: Iterable[Occurrence], until: datetime, *, dry_run: bool,
             now: datetime, preview: bool = False, since: datetime | None = None,
             jobs: Collection[str] | None = None) -> SyncResult:
        """Make the ledger's open deliveries due in [since, until) match `occurrences`.

        New ones become pending; pending ones take the new text and time;
        pending ones no longer planned become cancelled, except that one whose
        earlier attempt may have published becomes `cancelling` until the
        network is asked (`settle`); sent ones are never touched (a moved
        one-off post that went out is reported, not resent). Fires of a new
        recurring rule from before it existed are not recorded (`skipped`).
        `active` lists the open deliveries due before `until`.

        The ledger is read without the write lock and the changes are written in
        one short transaction, each only if its row is as it was read, so claims
        and outcomes are never held up by a big sync (and win over it: the sync
        then looks again). With `preview`, nothing is written.

        With `jobs`, only those jobs' deliveries are looked at (`occurrences`
        are theirs): a reload that changed a few entries of a big file reads
        and compares a few rows, not every open one. `active` then lists
        theirs; `open` and `next` always count every job.
        """
        wanted = {o.key: o for o in occurrences if not o.draft}
        window = (since or datetime.min.replace(tzinfo=UTC), until)
        for _ in range(SYNC_TRIES - 1):
            with contextlib.suppress(IntegrityError, _Changed):  # another writer got there first
                return self._sync(wanted, window, dry_run=dry_run, now=now, preview=preview, jobs=jobs)
        return self._sync(wanted, window, dry_run=dry_run, now=now, preview=preview, jobs=jobs)

    def _sync(self, wanted: dict[str, Occurrence], window: tuple[datetime, datetime], *,
              dry_run: bool, now: datetime, preview: bool, jobs: Collection[str] | None) -> SyncResult:
        since, until = window
        only = [] if jobs is None else [col(Delivery.job_id).in_(jobs)]
        with self.session() as s:
            rows = {d.key: d for d in s.exec(select(Delivery).where(
                Delivery.dry_run == dry_run, col(Delivery.status).in_(OPEN), *only))}
            keys = [k for k in wanted if k not in rows]
            for i in range(0, len(keys), 500):
                rows.update((d.key, d) for d in s.exec(select(Delivery).where(
                    Delivery.dry_run == dry_run, col(Delivery.key).in_(keys[i:i + 500]))))
            known_rules = self._known_rules(s, wanted, rows, now, dry_run)
        result = SyncResult()
        new: list[Occurrence] = []  # made into rows a batch at a time: 15k dicts of 20 keys are 20 MB
        writes: list[tuple[Delivery, dict[str, Any]]] = []
        for key, occ in wanted.items():
            row = rows.get(key)
            if row is None and key.startswith("cron:") and occ.due < now \
                    and occ.job_id not in known_rules:
                result.skipped[occ.job_id] = result.skipped.get(occ.job_id, 0) + 1
                continue
            if row is None:
                new.append(occ)
                result.added.append(key)
                continue
            content = _content(occ)
            if row.status in (*ACTIVE, "cancelling", "cancelled", "missed", "failed"):
                if row.uncertain and any(getattr(row, k) != content[k] for k in _MESSAGE):
                    # an earlier attempt may have published the old text: it is what the
                    # network is checked for, so it stays
                    result.kept_text.append(key)
                    content.update({k: getattr(row, k) for k in _MESSAGE})
                if row.status == "cancelled":
                    result.added.append(key)
                elif not any(getattr(row, k) != v for k, v in content.items()):
                    continue  # unchanged: no write
                elif row.status in ACTIVE:
                    result.changed.append(key)
                elif occ.deadline > now:  # missed or failed, edited so that it can go out
                    result.changed.append(key)
                    content.update(attempts=0, error=None, next_attempt_at=None)
                else:
                    continue
                result.before[key] = (row.due_at, row.text)
                status = {"cancelling": "retry"}.get(row.status, row.status) \
                    if row.status in (*ACTIVE, "cancelling") else "pending"
                writes.append((row, {**content, "status": status, "updated_at": now}))
            elif row.due_at != occ.due and row.status == "sent" and key.startswith("post:"):
                result.resend_refused.append(key)
        for row in rows.values():
            if row.status in ACTIVE and row.key not in wanted and since <= row.due_at < until:
                writes.append((row, {"status": "cancelling" if row.uncertain else "cancelled",
                                     "error": "removed from jobs.yaml", "updated_at": now}))
                (result.settling if row.uncertain else result.cancelled).append(row)
        if not preview:
            with self.transaction() as conn:
                for row, values in writes:
                    done = conn.execute(update(_D).where(
                        _D.c.id == row.id, _D.c.status == row.status,
                        _D.c.updated_at == row.updated_at).values(**values))
                    if done.rowcount != 1:
                        raise _Changed(row.key)
                for i in range(0, len(new), 1000):
                    conn.execute(insert(_D), [
                        {**_content(o), "key": o.key, "job_id": o.job_id, "dry_run": dry_run,
                         "status": "pending", "attempts": 0, "uncertain": False, "created_at": now,
                         "updated_at": now} for o in new[i:i + 1000]])
        for row, values in writes:  # the caller sees the rows as they now are (or would be)
            for k, v in values.items():
                setattr(row, k, v)
        if not preview:
            active = (Delivery.dry_run == dry_run, col(Delivery.status).in_(ACTIVE),
                      col(Delivery.due_at) < until)
            with self.session() as s:
                # the open rows as read and written above, and the new ones: every active row
                # (of `jobs`) without reading them all again
                fresh = [d for i in range(0, len(new), 500) for d in s.exec(select(Delivery).where(
                    Delivery.dry_run == dry_run, col(Delivery.key).in_([o.key for o in new[i:i + 500]])))]
                result.active = [d for d in (*rows.values(), *fresh)
                                 if d.status in ACTIVE and d.due_at < until]
                if jobs is None:
                    result.open = len(result.active)
                    result.next = min(result.active, key=lambda d: d.due_at, default=None)
                else:
                    result.open = s.exec(select(func.count()).select_from(Delivery).where(*active)).one()
                    result.next = s.exec(select(Delivery).where(*active)
                                         .order_by(col(Delivery.due_at)).limit(1)).first()
        return result

    @staticmethod
    def _known_rules(s: Session, wanted: dict[str, Occurrence], rows: dict[str, Delivery],
                     now: datetime, dry_run: bool) -> set[str]:
        """Recurring rules with past fires not yet in the ledger that the ledger knew before.

        A rule the ledger has never seen is new: its fires from before now are not
        sent late or recorded missed (they are from before it existed).
        """
        rules = {o.job_id for k, o in wanted.items()
                 if k not in rows and k.startswith("cron:") and o.due < now}
        if not rules:
            return set()
        return set(s.exec(select(Delivery.job_id).distinct().where(
            Delivery.dry_run == dry_run, col(Delivery.job_id).in_(rules),
            col(Delivery.key).startswith("cron:"))))

    def claim(self, delivery_id: int, node: str, now: datetime, lease: timedelta) -> Delivery | None:
        """Move a due pending/retry delivery to `sending` for `node`; None if someone else has it."""
        with self.transaction() as conn:
            row = conn.execute(_CLAIM, {"delivery_id": delivery_id, "node": node, "now": now,
                                        "ready": now, "lease_until": now + lease}).one_or_none()
        return None if row is None else Delivery(**row._mapping)

    def claim_ahead(self, ids: Sequence[int], node: str, now: datetime, ready: datetime,
                    lease: timedelta) -> list[Delivery]:
        """Claim, in one transaction, those of `ids` that may be sent by `ready` (a moment
        ahead of now), so that at their instant only the send remains.

        Like `claim`, but for a batch and a little early; deliveries under another
        (a comment or reply) are left out: they wait for their parent at their instant.
        The lease runs from `ready`. Claimed rows are returned in no particular order.
        """
        if not ids:
            return []
        with self.transaction() as conn:
            rows = conn.execute(_CLAIM_AHEAD, {"ids": list(ids), "node": node, "now": now,
                                               "ready": ready, "lease_until": ready + lease}).all()
        return [Delivery(**row._mapping) for row in rows]

    def renew(self, delivery: Delivery, node: str, now: datetime, lease: timedelta) -> bool:
        """Extend `node`'s claim on `delivery` to `now + lease`; False if it no longer holds it."""
        if not self._update_held(delivery, node, lease_until=now + lease):
            return False
        delivery.lease_until = now + lease
        return True

    def unclaim(self, rows: Iterable[Delivery], node: str, now: datetime) -> int:
        """Give back claims taken ahead (`claim_ahead`) whose send never started: the deliveries
        are open again as before the claim, with no attempt counted. Returns how many."""
        params = [{"delivery_id": row.id, "node": node, "now": now,
                   "status": "pending" if row.attempts <= 1 else "retry"} for row in rows]
        if not params:
            return 0
        with self.transaction() as conn:
            return int(conn.execute(_UNCLAIM, params).rowcount)

    def finish(self, delivery: Delivery, node: str, attempt: Attempt, **values: Any) -> bool:
        """Record an attempt and the delivery's new state, if `node` still holds the claim.

        Returns once it is committed. Outcomes recorded at the same moment by other
        threads share one transaction (group commit): whoever gets the write lock
        commits every outcome waiting for it, so a burst is not one commit per post.
        """
        mine = self._wait_for_write(_Outcome(delivery, node, attempt, values))
        self._commit_waiting()
        with self._outcomes_ready:
            self._outcomes_ready.wait_for(lambda: mine.done)
        if mine.error is not None:
            raise mine.error
        return mine.recorded

    def finish_soon(self, delivery: Delivery, node: str, attempt: Attempt, **values: Any) -> None:
        """`finish`, without waiting for the commit: a thread of the ledger's commits it at once,
        with whatever else is waiting, so the sender can go on to its next post (`flush` waits).

        Should it fail to be written, that is logged, and the delivery stays `sending` until
        its lease runs out; then it is checked on the network, as any abandoned send.
        """
        self._wait_for_write(_Outcome(delivery, node, attempt, values, soon=True))
        with self._outcomes_ready:
            if self._writer is None:
                self._writer = threading.Thread(target=self._write_soon, name="oyez-ledger",
                                                daemon=True)
                self._writer.start()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every outcome given to `finish_soon` is committed (or failed); False on timeout."""
        with self._outcomes_ready:
            return self._outcomes_ready.wait_for(lambda: self._unwritten == 0, timeout)

    def _wait_for_write(self, outcome: _Outcome) -> _Outcome:
        with self._outcomes_ready:
            self._outcomes.append(outcome)
            self._unwritten += 1
            self._outcomes_ready.notify_all()
        return outcome

    def _write_soon(self) -> None:
        while True:
            with self._outcomes_ready:
                self._outcomes_ready.wait_for(lambda: bool(self._outcomes))
            self._commit_waiting()

    def _commit_waiting(self) -> None:
        """Commit every outcome waiting, in one transaction (group commit)."""
        with self._write_lock:
            with self._outcomes_ready:
                batch, self._outcomes = self._outcomes, []
            if not batch:
                return
            try:
                _record(self._write_engine, batch)
            except SQLAlchemyError as exc:
                for outcome in batch:
                    outcome.error = exc
        for outcome in batch:
            if outcome.error is not None and outcome.soon:
                log.error("delivery %s: its outcome could not be recorded (%s); it stays `sending` "
                          "until its lease runs out, then is checked on the network",
                          outcome.delivery.key, str(getattr(outcome.error, "orig", outcome.error)))
            elif outcome.error is None and not outcome.recorded:
                log.warning("delivery %s: claim lost before its outcome was recorded",
                            outcome.delivery.key)
        with self._outcomes_ready:
            for outcome in batch:
                outcome.done = True
            self._unwritten -= len(batch)
            self._outcomes_ready.notify_all()

    def record_steps(self, delivery: Delivery, node: str, steps: str) -> bool:
        """Keep what an attempt did so far (`steps`, JSON), if `node` still holds the claim."""
        return self._update_held(delivery, node, steps=steps)

    def _update_held(self, delivery: Delivery, node: str | None, **values: Any) -> bool:
        """Set `values` on `delivery` if `node` still holds its claim; whether it did."""
        with self.transaction() as conn:
            return bool(conn.execute(update(_D).where(*_claimed_by(delivery.id, node)).values(**values))
                        .rowcount == 1)

    def parent(self, delivery_id: int) -> Delivery | None:
        """The delivery that delivery `delivery_id` is a comment or reply under, if any."""
        with self.engine.connect() as conn:
            row = conn.execute(_PARENT, {"delivery_id": delivery_id}).one_or_none()
        return None if row is None else Delivery(**row._mapping)

    def defer(self, delivery_id: int, until: datetime, now: datetime) -> None:
        """Push back an unclaimed delivery's next attempt (e.g. while a target is throttled)."""
        with self.writing() as s:
            s.execute(update(Delivery)
                      .where(col(Delivery.id) == delivery_id, col(Delivery.status).in_(ACTIVE))
                      .values(next_attempt_at=until, updated_at=now)
                      .execution_options(synchronize_session=False))
            s.commit()

    def due(self, now: datetime, *, dry_run: bool) -> Sequence[Delivery]:
        """Open deliveries that may be sent now."""
        with self.session() as s:
            return s.exec(select(Delivery).where(
                Delivery.dry_run == dry_run, col(Delivery.status).in_(ACTIVE),
                col(Delivery.due_at) <= now, col(Delivery.deadline) > now,
                or_(col(Delivery.next_attempt_at).is_(None), col(Delivery.next_attempt_at) <= now),
            ).order_by(col(Delivery.due_at), col(Delivery.id))).all()

    def expire(self, now: datetime, *, dry_run: bool) -> Sequence[Delivery]:
        """Mark open deliveries whose deadline has passed as `missed`; return them.

        Uncertain ones (an attempt may have published) are left for `settle`.
        """
        with self.writing() as s:
            late = s.exec(select(Delivery).where(
                Delivery.dry_run == dry_run, col(Delivery.status).in_(ACTIVE),
                col(Delivery.deadline) <= now, col(Delivery.uncertain).is_(False))).all()
            for row in late:
                row.status = "missed"
                row.error = _missed_reason(row, now)
                row.updated_at = now
                s.add(row)
            s.commit()
            return late

    def unsettled(self, now: datetime, *, dry_run: bool) -> Sequence[Delivery]:
        """Deliveries whose earlier attempt may have published and that must not be tried
        again: past their deadline, or removed from jobs.yaml (`cancelling`)."""
        with self.session() as s:
            return s.exec(select(Delivery).where(
                Delivery.dry_run == dry_run, col(Delivery.uncertain).is_(True), or_(
                    col(Delivery.status) == "cancelling",
                    col(Delivery.status).in_(ACTIVE) & (col(Delivery.deadline) <= now)))).all()

    def settle(self, delivery: Delivery, now: datetime, remote_id: str | None, error: str) -> bool:
        """Close an unsettled delivery: `sent` if it was found on the network, else `missed`
        (or `cancelled`, if it was removed from jobs.yaml)."""
        otherwise = "cancelled" if delivery.status == "cancelling" else "missed"
        values = ({"status": "sent", "remote_id": remote_id, "sent_at": now, "error": error}
                  if remote_id else {"status": otherwise, "error": error})
        with self.transaction() as conn:
            done = conn.execute(update(_D).where(_D.c.id == delivery.id,
                                                 _D.c.status == delivery.status)
                                .values(uncertain=False, updated_at=now, **values))
            return bool(done.rowcount == 1)

    def remote_ids(self, target: str, since: datetime) -> set[str]:
        """Post ids recorded for `target`'s deliveries sent since `since` (not to be matched again)."""
        with self.session() as s:
            return {rid for rid in s.exec(select(Delivery.remote_id).where(
                Delivery.target == target, col(Delivery.remote_id).is_not(None),
                col(Delivery.sent_at) >= since)) if rid}

    def stale(self, *, dry_run: bool) -> Sequence[Delivery]:
        """Deliveries left in `sending` (by anyone)."""
        with self.session() as s:
            return s.exec(select(Delivery).where(Delivery.dry_run == dry_run,
                                                 Delivery.status == "sending")).all()

    def release(self, delivery: Delivery, now: datetime, reason: str) -> bool:
        """Put an abandoned `sending` delivery back as an uncertain retry."""
        return self._update_held(delivery, delivery.claimed_by, status="retry", uncertain=True,
                                 lease_until=None, claimed_by=None, error=reason, updated_at=now)

    def daemons(self) -> Sequence[DaemonRow]:
        """Every daemon that has a row (stale ones included), by node."""
        with self.session() as s:
            return s.exec(select(DaemonRow).order_by(col(DaemonRow.node))).all()

    def heartbeat(self, daemon: DaemonRow) -> None:
        """Insert or refresh this daemon's row."""
        with self.writing() as s:
            s.merge(daemon)
            s.commit()

    def forget_daemon(self, node: str) -> None:
        """Remove a daemon's row (it stopped cleanly)."""
        with self.writing() as s:
            s.execute(delete(DaemonRow).where(col(DaemonRow.node) == node))
            s.commit()

    def record_reload(self, reload: Reload) -> None:
        """Append a reload record."""
        with self.writing() as s:
            s.add(reload)
            s.commit()

    def unhealthy(self) -> dict[str, TargetHealth]:
        """Targets whose credentials were refused, by name."""
        with self.session() as s:
            return {h.name: h for h in s.exec(select(TargetHealth))}

    def set_unhealthy(self, name: str, fingerprint: str, reason: str, now: datetime) -> None:
        """Remember that `name` with these settings was refused."""
        with self.writing() as s:
            s.merge(TargetHealth(name=name, fingerprint=fingerprint, reason=reason, since=now))
            s.commit()

    def set_healthy(self, name: str) -> None:
        """Forget a target's refusal (its settings changed)."""
        with self.writing() as s:
            health = s.get(TargetHealth, name)
            if health is not None:
                s.delete(health)
                s.commit()

    def deliveries(self, *, dry_run: bool | None, limit: int | None = None,
                   since: datetime | None = None, until: datetime | None = None) -> Sequence[Delivery]:
        """Deliveries, newest due first, optionally only those due in [since, until).

        `dry_run=None` returns real and dry-run deliveries alike.
        """
        with self.session() as s:
            query = select(Delivery)
            if dry_run is not None:
                query = query.where(Delivery.dry_run == dry_run)
            if since is not None:
                query = query.where(col(Delivery.due_at) >= since)
            if until is not None:
                query = query.where(col(Delivery.due_at) < until)
            query = query.order_by(col(Delivery.due_at).desc(), col(Delivery.id).desc())
            return s.exec(query.limit(limit)).all()

    def attempts(self, delivery_id: int) -> Sequence[Attempt]:
        """A delivery's attempts in order."""
        with self.session() as s:
            return s.exec(select(Attempt).where(Attempt.delivery_id == delivery_id)
                          .order_by(col(Attempt.number))).all()

    def reloads(self, limit: int | None = None) -> Sequence[Reload]:
        """Reload records, newest first."""
        with self.session() as s:
            return s.exec(select(Reload).order_by(col(Reload.id).desc()).limit(limit)).all()


def _table(model: type[SQLModel]) -> Table:
    return cast(Table, model.__table__)  # type: ignore[attr-defined]


_D = _table(Delivery)
# Built once: claiming is on every post's path, and a prepared Core statement costs
# a fraction of an ORM one (measured 0.22 ms vs 0.54 ms per claim on SQLite).
def _claiming(*which: Any) -> Any:
    """UPDATE moving the open deliveries `which` selects that may go out by :ready to
    `sending` for :node, returning them."""
    return (
        update(_D)
        .where(*which, _D.c.status.in_(ACTIVE), _D.c.due_at <= bindparam("ready"),
               _D.c.deadline > bindparam("now"),
               or_(_D.c.next_attempt_at.is_(None), _D.c.next_attempt_at <= bindparam("ready")))
        .values(status="sending", claimed_by=bindparam("node"), lease_until=bindparam("lease_until"),
                attempts=_D.c.attempts + 1, updated_at=bindparam("now"),
                first_attempt_at=func.coalesce(_D.c.first_attempt_at, bindparam("now")))
        .returning(*_D.c)  # SQLite >= 3.35 and PostgreSQL
    )


def _claimed_by(delivery_id: Any, node: Any) -> tuple[Any, ...]:
    """Where a delivery is still claimed by `node` (the fence of every write under a claim)."""
    return _D.c.id == delivery_id, _D.c.status == "sending", _D.c.claimed_by == node


_CLAIM = _claiming(_D.c.id == bindparam("delivery_id"))
# a comment or reply is not claimed ahead: it waits for its parent at its instant
_CLAIM_AHEAD = _claiming(_D.c.id.in_(bindparam("ids", expanding=True)), _D.c.parent.is_(None))
_UNCLAIM = (
    update(_D)
    .where(*_claimed_by(bindparam("delivery_id"), bindparam("node")))
    .values(status=bindparam("status"), claimed_by=None, lease_until=None,
            attempts=_D.c.attempts - 1, updated_at=bindparam("now"),
            first_attempt_at=case((_D.c.attempts <= 1, None), else_=_D.c.first_attempt_at))
)
_CHILD = _D.alias("child")
# On every delivery's path, like _CLAIM: one prepared join (most rows have no parent)
_PARENT = (
    select(*_D.c)
    .join(_CHILD, (_CHILD.c.parent == _D.c.key) & (_CHILD.c.dry_run == _D.c.dry_run))
    .where(_CHILD.c.id == bindparam("delivery_id"))
)


_MESSAGE = ("text", "link", "image", "images")


def _content(occ: Occurrence) -> dict[str, Any]:
    return {"part": occ.part, "target": occ.target, "tz": occ.tz_name, "due_at": occ.due,
            "deadline": occ.deadline, "text": occ.text, "link": occ.link, "image": occ.image,
            "options": occ.options, "images": "\n".join(occ.images) or None, "parent": occ.parent}


def out_of_date(row: Delivery, occ: Occurrence) -> bool:
    """True when `row` no longer says (time, text, target, ...) what occurrence `occ` says."""
    return any(getattr(row, k) != v for k, v in _content(occ).items())


def _missed_reason(row: Delivery, now: datetime) -> str:
    late = now - row.due_at
    reason = f"not sent within its window (due {row.due_at:%Y-%m-%d %H:%M:%S}Z, now {_human(late)} late)"
    return f"{reason}; last error: {row.error}" if row.error else reason


def _human(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _sqlite_file(url: str) -> str | None:
    """The file of a sqlite:/// URL; None for other databases and in-memory SQLite."""
    if not url.startswith("sqlite:///"):
        return None
    path = url.removeprefix("sqlite:///").partition("?")[0]
    return path if path and path != ":memory:" else None


def _identity(path: str | None) -> tuple[int, int] | None:
    try:
        st = os.stat(path) if path else None
    except OSError:
        return None
    return None if st is None else (st.st_dev, st.st_ino)


def make_engine(url: str, busy_seconds: float = 30.0, *, readonly: bool = False) -> Engine:
    """An engine for `url`; SQLite gets WAL, a busy timeout and thread-safe connections.

    With `readonly`, the database itself refuses every write on this engine.
    """
    if not url.startswith("sqlite"):
        given = make_url(url).query.get("options", "")  # e.g. a search_path: kept
        options = f"{given} -c default_transaction_read_only=on".strip()
        ro = {"connect_args": {"options": options}} if readonly else {}
        return create_engine(url, pool_pre_ping=True, **ro)
    path = url.removeprefix("sqlite:///")
    if readonly and path != url and path and not path.startswith((":memory:", "file:")):
        url = f"sqlite:///file:{quote(path)}?mode=ro&uri=true"
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": busy_seconds})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves, below
        cursor = dbapi_conn.cursor()
        if not readonly:  # switching to WAL is a write; a reader takes the mode the file has
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_seconds * 1000)}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        # Writers take the lock up front (see Ledger.writing); readers don't need it in WAL.
        immediate = conn.get_execution_options().get("oyez_write")
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def safe_url(url: str) -> str:
    """A database URL without its password."""
    head, sep, tail = url.partition("@")
    if not sep:
        return url
    scheme, _, creds = head.partition("://")
    return f"{scheme}://{creds.partition(':')[0]}:***@{tail}"
