"""Wall-clock times, durations and cron rules as jobs.yaml writes them."""

from __future__ import annotations

import bisect
import calendar
import functools
import itertools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.cron.expressions import AllExpression

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


@functools.lru_cache(maxsize=1024)  # a file repeats a few durations (grace, before) thousands of times
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


@functools.lru_cache(maxsize=4096)
def cron(expr: str, tz: ZoneInfo) -> Cron:
    """Build a trigger from a five-field crontab line, with crontab's meaning.

    Days of the week are 0-7 with 0 and 7 Sunday (APScheduler 3 counts from
    Monday), and when both day-of-month and day-of-week are restricted a day
    matching either fires, as in cron. A file's rules repeat (every weekday at
    09:00): the same rule in the same zone is built once and shared.
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
            parts = [trigger(day, "*"), trigger("*", days)]
            return Cron(OrTrigger(parts), tz, _Table.of(parts))
        part = trigger(day, days)
        return Cron(part, tz, _Table.of([part]))
    except ValueError as exc:
        raise ValueError(f"bad cron {expr!r}: {exc}") from None


class Cron:
    """A crontab rule: APScheduler's trigger says what it means; `fires` lists its times fast.

    APScheduler finds each next fire field by field (~55 µs a call): a file
    of a thousand weekly rules asked for a month of fires spent most of
    `oyez validate` there. `fires` computes the fires of the days it can
    prove APScheduler would give, and asks APScheduler about the rest.
    """

    __slots__ = ("table", "trigger", "tz")

    def __init__(self, trigger: BaseTrigger, tz: ZoneInfo, table: _Table | None) -> None:
        self.trigger = trigger
        self.tz = tz
        self.table = table  # None: every fire is asked of APScheduler

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime | None:
        """APScheduler's answer (wall-clock repeats included)."""
        result: datetime | None = self.trigger.get_next_fire_time(previous_fire_time, now)
        return result


@dataclass(frozen=True)
class _Table:
    """The months, days and clock times a rule of CronTriggers fires on (none of them change
    with the date but the days of a month, which the day-of-month field gives)."""

    months: frozenset[int]
    clock: tuple[timedelta, ...]  # times of day, ascending
    days: tuple[tuple[Any, frozenset[int]], ...]  # (day-of-month field or None for any, weekdays)

    @classmethod
    def of(cls, triggers: list[CronTrigger]) -> _Table | None:
        """The table of the union of `triggers`, which differ only in their day fields; None if
        a field is not one of a five-field crontab line."""
        days = []
        for trigger in triggers:
            field = {f.name: f for f in trigger.fields}
            if (str(field["year"]), str(field["week"]), str(field["second"])) != ("*", "*", "0"):
                return None
            day = field["day"]
            every = all(type(e) is AllExpression and e.step is None for e in day.expressions)
            days.append((None if every else day,
                         _allowed(field["day_of_week"], lambda: [datetime(2001, 1, d) for d in range(1, 8)])))
        minutes = _allowed(field["minute"], lambda: [datetime(2001, 1, 1, 0, m) for m in range(60)])
        hours = _allowed(field["hour"], lambda: [datetime(2001, 1, 1, h) for h in range(24)])
        return cls(_allowed(field["month"], lambda: [datetime(2001, m, 1) for m in range(1, 13)]),
                   tuple(timedelta(hours=h, minutes=m) for h in sorted(hours) for m in sorted(minutes)),
                   tuple(days))

    def month_days(self, year: int, month: int) -> list[int]:
        """The days of a month the rule fires on."""
        if month not in self.months:
            return []
        last = calendar.monthrange(year, month)[1]
        first_weekday = calendar.weekday(year, month, 1)
        found: set[int] = set()
        for field, weekdays in self.days:
            numbers = range(1, last + 1) if field is None else _field_days(field, year, month, last)
            found.update(n for n in numbers if (first_weekday + n - 1) % 7 in weekdays)
        return sorted(found)


def _field_days(field: Any, year: int, month: int, last: int) -> Iterator[int]:
    """The days of a month an APScheduler day-of-month field allows."""
    day = 1
    while day <= last:
        found = field.get_next_value(datetime(year, month, day))
        if found is None or found > last:
            return
        yield found
        day = found + 1


_ALLOWED: dict[tuple[str, str], frozenset[int]] = {}


def _allowed(field: Any, probes: Callable[[], list[datetime]]) -> frozenset[int]:
    """The values a date-independent APScheduler field allows, probed once per expression text."""
    key = (field.name, str(field))
    found = _ALLOWED.get(key)
    if found is None:
        found = _ALLOWED[key] = frozenset(
            field.get_value(d) for d in probes() if field.get_next_value(d) == field.get_value(d))
    return found


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


def fire_times(trigger: Cron, start: datetime, end: datetime) -> list[datetime]:
    """Every fire time of `trigger` in [start, end), as aware UTC datetimes.

    On the day clocks go back a wall-clock time happens twice; it fires only
    the first time, so a daily 01:30 post is sent once, whatever the window.
    """
    return list(itertools.takewhile(lambda fire: fire < end, fires(trigger, start)))


def fires(trigger: Cron, start: datetime) -> Iterator[datetime]:
    """Fire times of `trigger` from `start` on (aware UTC), as `fire_times` counts them."""
    if trigger.table is not None:
        return _walked(trigger, trigger.table, start)
    return _unrepeated(_asked(trigger.trigger, None, start))


def _asked(trigger: BaseTrigger, last: datetime | None, start: datetime) -> Iterator[datetime]:
    """APScheduler's fire times after `last` (else from `start`), each from the one before."""
    fire = trigger.get_next_fire_time(last, last or start)
    while fire is not None:
        yield fire
        fire = trigger.get_next_fire_time(fire, fire)


def _unrepeated(fires: Iterator[datetime]) -> Iterator[datetime]:
    """`fires` in UTC, without the second pass of a wall-clock time on the day clocks go back."""
    return (fire.astimezone(UTC) for fire in fires if not _repeated_wall_time(fire))


def _walked(cron: Cron, table: _Table, start: datetime) -> Iterator[datetime]:
    """`_unrepeated(_asked(...))`, computed where that is provably the same.

    APScheduler steps from each fire to the next on the wall clock, adding the
    steps in UTC: where the UTC offset is the same from one fire to the next,
    its answer is the next matching clock time, which is computed here. Where a
    change of offset (clocks going forward or back) lies between, it is asked,
    from the fire before, as `fires` always did, until a fire has passed the
    change. Its answer for a time the change skips may fall on the next day,
    so it is asked about two days at a time.
    """
    tz = cron.tz
    day = start.astimezone(tz).date() - timedelta(days=1)
    since = day  # a change of offset on this day or later lies after the last fire
    last: datetime | None = None  # the last fire APScheduler gave (a repeat included), or would have
    month, numbers = (0, 0), table.month_days(day.year, day.month)
    while day.year <= MAX_YEAR:
        if month != (day.year, day.month):
            month, numbers = (day.year, day.month), table.month_days(day.year, day.month)
        i = bisect.bisect_left(numbers, day.day)
        if i == len(numbers):  # none left this month
            day = date(day.year + 1, 1, 1) if day.month == 12 else date(day.year, day.month + 1, 1)
            continue
        day = date(day.year, day.month, numbers[i])
        if _changes(tz, since, day):
            day += timedelta(days=2)
            end = _midnight(day, tz).astimezone(UTC)
            for fire in _asked(cron.trigger, last, start):
                if fire >= end:
                    break
                last = fire
                if not _repeated_wall_time(fire):
                    yield fire.astimezone(UTC)
            if last is not None and not _changes(tz, last.astimezone(tz).date(), day):
                since = day
            continue
        offset = _midnight(day, tz).utcoffset()
        assert offset is not None
        base = datetime(day.year, day.month, day.day, tzinfo=UTC) - offset
        for clock in table.clock:
            if base + clock >= start:
                last = base + clock
                yield last
        day += timedelta(days=1)
        since = day
    for fire in _asked(cron.trigger, last, max(start, datetime(MAX_YEAR + 1, 1, 1, tzinfo=UTC))):
        if not _repeated_wall_time(fire):
            yield fire.astimezone(UTC)


def _midnight(day: date, tz: ZoneInfo) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=tz)


def _changes(tz: ZoneInfo, first: date, last: date) -> bool:
    """Whether the UTC offset of `tz` changes on a day from `first` to `last` (both included)."""
    for year in range(first.year, last.year + 1):
        days = _changes_in(tz, year)
        i = bisect.bisect_left(days, first)
        if i < len(days) and days[i] <= last:
            return True
    return False


@functools.lru_cache(maxsize=1024)
def _changes_in(tz: ZoneInfo, year: int) -> list[date]:
    """The days of `year` whose UTC offset in `tz` at midnight differs from the next day's."""
    day, changed = date(year, 1, 1), []
    offset = _midnight(day, tz).utcoffset()
    while day.year == year:
        after = day + timedelta(days=1)
        next_offset = _midnight(after, tz).utcoffset()
        if next_offset != offset:
            changed.append(day)
        day, offset = after, next_offset
    return changed


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
