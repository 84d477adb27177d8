"""The plan as an iCalendar feed (`oyez export-ics`, GET /calendar.ics): one event per post.

Each event's UID comes from its ledger key, so a subscribed calendar (Outlook,
Google) updates the entry in place when jobs.yaml changes its time or text:

- one-off post   post:{id}:{target}@oyez                  (the key itself)
- recurring post cron:{id}:{target}:{instant}@oyez        (the key itself)
- live event     live:{id}:{part}:{target}@oyez           (the key without the event's start)

A live event's ledger key carries the event's start, so that moving the event
gives it fresh reminders; its UID leaves the start out, so that the calendar
moves the entry instead of adding a second one. When two deliveries would share
a UID (a reminder that went out before its event moved, and the new one), the
one still to go out keeps it and the other takes its full key. Cancelled
deliveries are left out: a calendar drops an entry that disappears from its feed.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from icalendar import Calendar, Event

DEFAULT_BACK = timedelta(days=30)
DEFAULT_AHEAD = timedelta(days=90)
SLOT = timedelta(minutes=15)  # a post is an instant; calendars show it as a short slot
DONE = ("sent", "failed", "missed")


def uid(key: str) -> str:
    """The calendar UID for a ledger key: stable across moves of a live event."""
    parts = key.split(":")
    if parts[0] == "live" and len(parts) > 4:  # live:{id}:{part}:{starts, with colons}:{target}
        key = ":".join([*parts[:3], parts[-1]])
    return f"{key}@oyez"


def feed(rows: list[dict[str, Any]], now: datetime) -> bytes:
    """An iCalendar document with one VEVENT per row of `report.timeline_rows`."""
    cal = Calendar()
    cal.add("prodid", "-//oyez//plan//EN")
    cal.add("version", "2.0")
    cal.add("calscale", "GREGORIAN")
    cal.add("x-wr-calname", "oyez: scheduled posts")
    used: set[str] = set()
    # what is still to go out claims its stable UID first; among the rest, the latest wins
    order = sorted((r for r in rows if r["status"] != "cancelled"),
                   key=lambda r: (r["status"] in DONE, _negated(r["utc"])))
    for row in order:
        stable = uid(row["key"])
        event_uid = stable if stable not in used else f"{row['key']}@oyez"
        used.add(event_uid)
        cal.add_component(_event(row, event_uid, now))
    return bytes(cal.to_ical())


def _negated(iso: str) -> float:
    return -datetime.fromisoformat(iso).timestamp()


def _event(row: dict[str, Any], event_uid: str, now: datetime) -> Event:
    due = datetime.fromisoformat(row["utc"])
    first = row["text"].strip().splitlines()[0] if row["text"].strip() else row["job"]
    event = Event()
    event.add("uid", event_uid)
    event.add("dtstamp", now)
    event.add("dtstart", due)
    event.add("dtend", due + SLOT)
    event.add("summary", f"[{row['status']}] {row['kind']} to {row['target']}: {first[:80]}")
    details = [row["text"], ""]
    details += [f"{name}: {row[name]}" for name in ("link", "image") if row[name]]
    details += [f"status: {row['status']}", f"key: {row['key']}"]
    if row["error"]:
        details.append(f"error: {row['error']}")
    event.add("description", "\n".join(details))
    event.add("categories", [row["kind"]])
    if row["url"] or row["link"]:
        event.add("url", row["url"] or row["link"])
    if row["status"] == "draft":
        event.add("status", "TENTATIVE")
    return event
