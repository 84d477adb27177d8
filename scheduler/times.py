"""Wall-clock times, durations and cron rules as jobs.yaml writes them."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger

_DURATION = re.compile(r"(\d+)\s*([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_CRON_DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def zone(name: str) -> ZoneInfo:
    """Return the IANA time zone `name`, or raise ValueError."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (use an IANA name like Europe/London)") from None


def duration(text: str) -> timedelta:
    """Parse '30s', '15m', '2h', '2d', '1w' or combinations like '1h30m'."""
    compact = text.strip()
    if not compact or _DURATION.sub("", compact).strip():
        raise ValueError(f"bad duration {text!r} (use e.g. 30s, 15m, 2h, 2d)")
    seconds = sum(int(n) * _UNITS[unit] for n, unit in _DURATION.findall(compact))
    return timedelta(seconds=seconds)


def instant(text: str, tz: ZoneInfo) -> datetime:
    """Parse a time; without an offset it is wall-clock time in `tz`. Returns aware UTC.

    An ambiguous time (clocks going back) means its first occurrence; a time
    that does not exist (clocks going forward) is an error.
    """
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"bad time {text!r} (use 'YYYY-MM-DD HH:MM[:SS]' or ISO 8601 with an offset)"
        ) from None
    if len(text.strip()) <= 10:
        raise ValueError(f"bad time {text!r}: a time of day is required (e.g. {text} 09:00)")
    if parsed.tzinfo is not None:
        return parsed.astimezone(UTC)
    local = parsed.replace(tzinfo=tz)
    utc = local.astimezone(UTC)
    if utc.astimezone(tz).replace(tzinfo=None) != parsed:
        raise ValueError(f"{text} does not exist in {tz.key} (the clocks go forward then)")
    return utc


def day_end(text: str, tz: ZoneInfo) -> datetime:
    """Parse an `until` value: a date means the end of that day, a time means that instant."""
    stripped = text.strip()
    if len(stripped) <= 10:
        try:
            day = date.fromisoformat(stripped)
        except ValueError:
            raise ValueError(f"bad date {text!r} (use YYYY-MM-DD)") from None
        start = datetime(day.year, day.month, day.day, tzinfo=tz) + timedelta(days=1)
        return start.astimezone(UTC)
    return instant(stripped, tz)


def cron(expr: str, tz: ZoneInfo) -> CronTrigger:
    """Build a trigger from a five-field crontab line (0 and 7 are Sunday, as in cron)."""
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(f"bad cron {expr!r}: expected 5 fields, got {len(fields)}")
    fields[4] = re.sub(r"\d+", lambda m: _day_name(str(m.group())), fields[4])
    try:
        return CronTrigger(
            minute=fields[0], hour=fields[1], day=fields[2], month=fields[3],
            day_of_week=fields[4], timezone=tz,
        )
    except ValueError as exc:
        raise ValueError(f"bad cron {expr!r}: {exc}") from None


def _day_name(number: str) -> str:
    if int(number) > 7:
        raise ValueError(f"day of week {number} is out of range 0-7")
    return _CRON_DAYS[int(number)]


def fire_times(trigger: CronTrigger, start: datetime, end: datetime) -> list[datetime]:
    """Every fire time of `trigger` in [start, end), as aware UTC datetimes.

    On the day clocks go back a wall-clock time happens twice; it fires once
    (the first time), so a daily 01:30 post is not sent twice.
    """
    times: list[datetime] = []
    seen_wall: set[datetime] = set()
    fire = trigger.get_next_fire_time(None, start)
    while fire is not None and fire < end:
        wall = fire.replace(tzinfo=None)
        if wall not in seen_wall:
            seen_wall.add(wall)
            times.append(fire.astimezone(UTC))
        fire = trigger.get_next_fire_time(fire, fire)
    return times


def short(delta: timedelta) -> str:
    """Render a duration compactly: 2d, 1h, 15m, 30s, 1h30m."""
    seconds = int(delta.total_seconds())
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts) or "0s"
