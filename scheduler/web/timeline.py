"""The timeline's shape: `report.timeline_rows` grouped by day, live events as one block."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from ..config import Config, LiveEvent

LIVE_KINDS = ("reminder", "live", "thanks")
# status → (css class, icon): the icon and the status word always go together, so colour is
# never the only sign (WCAG 1.4.1)
_LOOKS = {
    "sent": ("ok", "✓"), "failed": ("bad", "✗"), "missed": ("bad", "!"), "retry": ("warn", "↻"),
    "sending": ("todo", "→"), "pending": ("todo", "○"), "not": ("todo", "○"),
    "cancelled": ("off", "⊘"), "draft": ("off", "✎"),
}


@dataclass
class Block:
    """A live event on its day, with every one of its posts in view (some on other days)."""

    event: LiveEvent
    starts: datetime  # in the page's zone
    ends: datetime
    rows: list[dict[str, Any]]


@dataclass
class Day:
    """One day of the timeline: single posts and live-event blocks, by time."""

    day: date
    today: bool
    past: bool
    items: list[tuple[str, dict[str, Any] | Block]] = field(default_factory=list)


def days(rows: list[dict[str, Any]], cfg: Config | None, zone: ZoneInfo, first: date, count: int,
         now: datetime) -> list[Day]:
    """Every day from `first` for `count` days, with its posts; a live event as one block."""
    today = now.astimezone(zone).date()
    result = {first + timedelta(days=i): Day(first + timedelta(days=i), today=False, past=False)
              for i in range(count)}
    for d in result.values():
        d.today, d.past = d.day == today, d.day < today
    events = {e.id: e for e in cfg.live_events} if cfg is not None else {}
    by_event: dict[str, list[dict[str, Any]]] = defaultdict(list)
    keyed: list[tuple[datetime, str, dict[str, Any] | Block]] = []
    for row in rows:
        if row["kind"] in LIVE_KINDS and row["job"] in events:
            by_event[row["job"]].append(row)
    blocks = {}
    for event in events.values():
        starts = event.starts.astimezone(zone)
        if starts.date() in result:
            blocks[event.id] = Block(event, starts, event.ends.astimezone(zone), by_event[event.id])
            keyed.append((starts, "event", blocks[event.id]))
    for row in rows:
        moment = datetime.fromisoformat(row["utc"]).astimezone(zone)
        block = blocks.get(row["job"]) if row["kind"] in LIVE_KINDS else None
        if block is not None and block.starts.date() == moment.date():
            continue  # shown inside its event's block
        keyed.append((moment, "post", row))
    for moment, what, item in sorted(keyed, key=lambda k: k[0]):
        if moment.date() in result:
            result[moment.date()].items.append((what, item))
    return list(result.values())


def look(status: str) -> tuple[str, str]:
    """(css class, icon) for a status such as "sent" or "retry (after attempt 2)"."""
    return _LOOKS.get(status.split()[0], ("todo", "○"))


def lateness(ms: int | None) -> str:
    """How late a delivery went out, in words."""
    if ms is None:
        return ""
    if ms < 1000:
        return "on time"
    seconds = ms / 1000
    return f"{seconds:.1f} s late" if seconds < 120 else f"{seconds / 60:.0f} min late"
