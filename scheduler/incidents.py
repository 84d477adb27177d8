"""Incidents in the ledger: each opens once, is counted while open, and resolves once.

Every write is one conditional statement in a write transaction, so retries,
restarts and several daemons on one database agree on what is new:

- `open` counts an open incident again (no alert), reopens a resolved one as a
  new incident, or inserts it; only the call that opened it returns True.
- `claim` hands the alerts not yet sent to exactly one daemon: an UPDATE that
  sets `alerted_at` (or `resolve_alerted_at`) where it is still NULL, RETURNING
  the rows it changed. A daemon that dies between claiming and sending loses
  that alert (at most once, never twice).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from .ledger import Incident, Ledger, _table

_I = _table(Incident)


@dataclass(frozen=True)
class Claimed:
    """The alerts one daemon must send now."""

    opened: list[Incident]
    resolved: list[Incident]


class Incidents:
    """The incident table of one ledger."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def open(self, kind: str, subject: str, detail: str, now: datetime, *, event: bool = False) -> bool:
        """Record that incident `kind:subject` is happening; True if this call opened it.

        An `event` (a post failed, was missed) has nothing to wait for: it is
        stored resolved, so it alerts once and never sends a "resolved" alert.
        """
        try:
            return self._open(kind, subject, detail, now, event)
        except IntegrityError:  # another daemon inserted it at the same moment (PostgreSQL)
            return self._open(kind, subject, detail, now, event)

    def _open(self, kind: str, subject: str, detail: str, now: datetime, event: bool) -> bool:
        key = f"{kind}:{subject}"
        closed = {"resolved_at": now, "resolve_alerted_at": now, "resolution": "event"} if event else {}
        with self.ledger.transaction() as conn:
            again = conn.execute(update(_I).where(_I.c.key == key, _I.c.resolved_at.is_(None))
                                 .values(count=_I.c.count + 1, last_seen_at=now, detail=detail))
            if again.rowcount == 1:
                return False
            fresh = {"count": 1, "opened_at": now, "last_seen_at": now, "detail": detail,
                     "resolved_at": None, "resolve_alerted_at": None, "resolution": None,
                     "alerted_at": None, "alerted_by": None, **closed}
            reopened = conn.execute(update(_I).where(_I.c.key == key, _I.c.resolved_at.is_not(None))
                                    .values(**fresh))
            if reopened.rowcount == 0:
                conn.execute(insert(_I).values(key=key, kind=kind, subject=subject, **fresh))
        return True

    def resolve(self, kind: str, subject: str, resolution: str, now: datetime) -> bool:
        """Close incident `kind:subject` if open; True if this call closed it."""
        with self.ledger.transaction() as conn:
            done = conn.execute(update(_I).where(_I.c.key == f"{kind}:{subject}",
                                                 _I.c.resolved_at.is_(None))
                                .values(resolved_at=now, resolution=resolution))
            return bool(done.rowcount == 1)

    def still_open(self) -> list[Incident]:
        """The incidents not resolved yet, oldest first."""
        with self.ledger.engine.connect() as conn:
            rows = conn.execute(select(_I).where(_I.c.resolved_at.is_(None)).order_by(_I.c.opened_at))
            return [Incident(**r._mapping) for r in rows]

    def claim(self, node: str, now: datetime) -> Claimed:
        """Take every alert not yet sent, for `node` to send; no other daemon gets them."""
        with self.ledger.transaction() as conn:
            opened = conn.execute(update(_I).where(_I.c.alerted_at.is_(None))
                                  .values(alerted_at=now, alerted_by=node).returning(*_I.c)).all()
            resolved = conn.execute(update(_I).where(_I.c.alerted_at.is_not(None),
                                                     _I.c.resolved_at.is_not(None),
                                                     _I.c.resolve_alerted_at.is_(None))
                                    .values(resolve_alerted_at=now).returning(*_I.c)).all()
        return Claimed([Incident(**r._mapping) for r in opened],
                       [Incident(**r._mapping) for r in resolved])
