"""Wall-clock times, durations and cron rules as jobs.yaml writes them."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger

_DURATION = re.compile(r"(\d+)\s*([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
MIN_YEAR, MAX_YEAR = 1970, 2200  # keeps every time ± any duration inside datetime's range
MAX_DURATION_DAYS = 3660
_CRON_DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]


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
    if seconds > MAX_DURATION_DAYS * 86400:
        raise ValueError(f"duration {text!r} is longer than {MAX_DURATION_DAYS} days")
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
    if not MIN_YEAR <= parsed.year <= MAX_YEAR:
        raise ValueError(f"time {text!r} is outside the years {MIN_YEAR}-{MAX_YEAR}")
    if parsed.tzinfo is not None:
        return parsed.astimezone(UTC)
    local = parsed.replace(tzinfo=tz)
    utc = local.astimezone(UTC)
    if utc.astimezone(tz).replace(tzinfo=None) != parsed:
        raise ValueError(f"{text} does not exist in {tz.key} (the clocks go forward then)")
    return utc


def day_end(text: str, tz: ZoneInfo) -> datetime:
    """Parse an `until` value: a date means the end of that day, a time means that instant."""
    return _day_or_instant(text, tz, timedelta(days=1))


def day_start(text: str, tz: ZoneInfo) -> datetime:
    """Parse a `from` value: a date means the start of that day, a time means that instant."""
    return _day_or_instant(text, tz, timedelta(0))


def _day_or_instant(text: str, tz: ZoneInfo, shift: timedelta) -> datetime:
    stripped = text.strip()
    if len(stripped) <= 10:
        try:
            day = date.fromisoformat(stripped)
        except ValueError:
            raise ValueError(f"bad date {text!r} (use YYYY-MM-DD)") from None
        if not MIN_YEAR <= day.year <= MAX_YEAR:
            raise ValueError(f"date {text!r} is outside the years {MIN_YEAR}-{MAX_YEAR}")
        start = datetime(day.year, day.month, day.day) + shift
        return start.replace(tzinfo=tz).astimezone(UTC)
    return instant(stripped, tz)


def earlier(moment: datetime, ahead: timedelta, tz: ZoneInfo, at: time | None = None) -> datetime:
    """`moment` minus `ahead`, counting whole days as calendar days on the wall clock of `tz`.

    "2d before" an 18:00 event is 18:00 two days earlier even across a clock
    change (not 48 hours, which would be 17:00 or 19:00); the part under a day
    is elapsed time. With `at`, the result is that clock time on the day
    reached. A wall time that falls twice means the first; one that does not
    exist is read with the offset from before the change.
    """
    wall = moment.astimezone(tz).replace(tzinfo=None) - timedelta(days=ahead.days)
    if at is not None:
        wall = datetime.combine(wall.date(), at)
    return wall.replace(tzinfo=tz).astimezone(UTC) - timedelta(seconds=ahead.seconds)


def cron(expr: str, tz: ZoneInfo) -> BaseTrigger:
    """Build a trigger from a five-field crontab line, with crontab's meaning.

    Days of the week are 0-7 with 0 and 7 Sunday (APScheduler 3 counts from
    Monday), and when both day-of-month and day-of-week are restricted a day
    matching either fires, as in cron.
    """
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(f"bad cron {expr!r}: expected 5 fields, got {len(fields)}")
    minute, hour, day, month, weekday = fields
    try:
        days = _weekdays(weekday)

        def trigger(day: str, day_of_week: str) -> CronTrigger:
            return CronTrigger(minute=minute, hour=hour, day=day, month=month,
                               day_of_week=day_of_week, timezone=tz)

        if day != "*" and weekday != "*":
            return OrTrigger([trigger(day, "*"), trigger("*", days)])
        return trigger(day, days)
    except ValueError as exc:
        raise ValueError(f"bad cron {expr!r}: {exc}") from None


def _weekdays(field: str) -> str:
    """A crontab day-of-week field as APScheduler day names ('*' stays '*')."""
    if field == "*":
        return field
    chosen: set[int] = set()
    for item in field.lower().split(","):
        base, _, step_text = item.partition("/")
        step = int(step_text) if step_text.isdigit() and int(step_text) > 0 else None
        if step_text and step is None:
            raise ValueError(f"bad step in day of week {item!r}")
        if base == "*":
            low, high = 0, 6
        else:
            first, _, last = base.partition("-")
            low = _weekday(first)
            high = _weekday(last) if last else (6 if step else low)
            if high < low:
                high += 7
        chosen.update(d % 7 for d in range(low, high + 1, step or 1))
    return ",".join(_CRON_DAYS[d] for d in sorted(chosen))


def _weekday(text: str) -> int:
    if text.isdigit() and int(text) <= 7:
        return int(text) % 7
    if text[:3] in _CRON_DAYS and len(text) == 3:
        return _CRON_DAYS.index(text)
    raise ValueError(f"bad day of week {text!r} (use 0-7 or sun-sat)")


def fire_times(trigger: BaseTrigger, start: datetime, end: datetime) -> list[datetime]:
    """Every fire time of `trigger` in [start, end), as aware UTC datetimes.

    On the day clocks go back a wall-clock time happens twice; it fires only
    the first time, so a daily 01:30 post is sent once, whatever the window.
    """
    return list(itertools.takewhile(lambda fire: fire < end, fires(trigger, start)))


def fires(trigger: BaseTrigger, start: datetime) -> Iterator[datetime]:
    """Fire times of `trigger` from `start` on (aware UTC), as `fire_times` counts them."""
    fire = trigger.get_next_fire_time(None, start)
    while fire is not None:
        if not _repeated_wall_time(fire):
            yield fire.astimezone(UTC)
        fire = trigger.get_next_fire_time(fire, fire)


def _repeated_wall_time(moment: datetime) -> bool:
    """True for the second pass of a wall-clock time on the day clocks go back."""
    tz = moment.tzinfo
    local = moment.astimezone(tz)
    first = local.replace(fold=0).astimezone(UTC)
    return local.fold == 1 and first != moment.astimezone(UTC)


def short(delta: timedelta) -> str:
    """Render a duration compactly: 2d, 1h, 15m, 30s, 1h30m."""
    seconds = int(delta.total_seconds())
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts) or "0s"
