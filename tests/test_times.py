"""Wall-clock times, durations and cron rules: tables of (input, expected) rows."""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from scheduler import times

LONDON = ZoneInfo("Europe/London")
UTC_ZONE = ZoneInfo("UTC")


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


@pytest.mark.parametrize(("text", "expected"), [
    ("30s", timedelta(seconds=30)),
    ("15m", timedelta(minutes=15)),
    ("2h", timedelta(hours=2)),
    ("2d", timedelta(days=2)),
    ("1w", timedelta(weeks=1)),
    ("1h30m", timedelta(hours=1, minutes=30)),
    ("1h 30m", timedelta(hours=1, minutes=30)),
    (" 90s ", timedelta(seconds=90)),
    ("0s", timedelta(0)),
])
def test_duration(text: str, expected: timedelta) -> None:
    assert times.duration(text) == expected


@pytest.mark.parametrize("text", [
    "", "   ", "5", "h", "1x", "-1h", "1.5h", "2D", "1 hour", "1h and 2m",
])
def test_bad_duration(text: str) -> None:
    with pytest.raises(ValueError, match="bad duration"):
        times.duration(text)


def test_huge_duration_is_rejected() -> None:
    with pytest.raises(ValueError, match=re.escape("duration '9999999999999w' is longer than 3660 days")):
        times.duration("9999999999999w")


@pytest.mark.parametrize(("text", "tz", "expected"), [
    ("2020-10-15 18:00", "Europe/London", utc(2020, 10, 15, 17)),  # BST
    ("2020-12-15 18:00", "Europe/London", utc(2020, 12, 15, 18)),  # GMT
    ("2020-10-13 07:49:30", "Europe/London", utc(2020, 10, 13, 6, 49, 30)),
    ("2020-10-15T18:00", "Europe/London", utc(2020, 10, 15, 17)),
    ("  2020-10-15 18:00  ", "Europe/London", utc(2020, 10, 15, 17)),
    ("2020-10-15 18:00", "America/New_York", utc(2020, 10, 15, 22)),
    ("2020-10-15T18:00+02:00", "Europe/London", utc(2020, 10, 15, 16)),
    ("2020-10-15T18:00:00-05:00", "Europe/London", utc(2020, 10, 15, 23)),
    ("2020-10-15T18:00Z", "Europe/London", utc(2020, 10, 15, 18)),
    ("2020-10-15 18:00:00Z", "America/New_York", utc(2020, 10, 15, 18)),
    # clocks go back at 02:00 BST: 01:30 happens twice and means the first (BST) one
    ("2020-10-25 01:30", "Europe/London", utc(2020, 10, 25, 0, 30)),
    ("2020-10-25 00:59", "Europe/London", utc(2020, 10, 24, 23, 59)),
    ("2020-10-25 02:00", "Europe/London", utc(2020, 10, 25, 2)),
    # clocks go forward at 01:00 GMT: 00:59 GMT is followed by 02:00 BST
    ("2021-03-28 00:59", "Europe/London", utc(2021, 3, 28, 0, 59)),
    ("2021-03-28 02:00", "Europe/London", utc(2021, 3, 28, 1)),
])
def test_instant(text: str, tz: str, expected: datetime) -> None:
    result = times.instant(text, ZoneInfo(tz))
    assert result == expected
    assert result.utcoffset() == timedelta(0)


@pytest.mark.parametrize(("text", "tz", "message"), [
    ("2020-10-15", "Europe/London", "a time of day is required"),
    ("20201015", "Europe/London", "a time of day is required"),
    ("2021-03-28 01:30", "Europe/London", "does not exist in Europe/London"),
    ("2021-03-28 01:00", "Europe/London", "does not exist in Europe/London"),
    ("2021-03-14 02:30", "America/New_York", "does not exist in America/New_York"),
    ("tomorrow", "Europe/London", "bad time 'tomorrow'"),
    ("", "Europe/London", "bad time"),
    ("2020-02-30 09:00", "Europe/London", "bad time"),
    ("2020-10-15 25:00", "Europe/London", "bad time"),
    ("15/10/2020 18:00", "Europe/London", "bad time"),
    ("0001-01-01 00:00", "Etc/GMT-14", "time '0001-01-01 00:00' is outside the years 1970-2200"),
])
def test_bad_instant(text: str, tz: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        times.instant(text, ZoneInfo(tz))


@pytest.mark.parametrize(("text", "expected"), [
    ("2021-03-31", utc(2021, 3, 31, 23)),  # midnight BST that night
    ("2020-12-31", utc(2021, 1, 1)),
    ("2021-03-27", utc(2021, 3, 28)),  # the night before clocks go forward: still GMT
    ("2021-03-28", utc(2021, 3, 28, 23)),
    ("2020-10-25", utc(2020, 10, 26)),  # the 25-hour day
    ("2021-03-31 12:00", utc(2021, 3, 31, 11)),
    ("2021-03-31T12:00Z", utc(2021, 3, 31, 12)),
])
def test_day_end(text: str, expected: datetime) -> None:
    assert times.day_end(text, LONDON) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("2021-13-01", "bad date"),
    ("31/03/2021", "bad date"),
    ("soon", "bad date"),
    ("2021-03-28 01:30", "does not exist"),
    ("9999-12-31", "date '9999-12-31' is outside the years 1970-2200"),
])
def test_bad_day_end(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        times.day_end(text, LONDON)


def fires(expr: str, start: datetime, end: datetime) -> list[str]:
    """Fire times of `expr` in London as 'Mon 01 09:00' wall-clock labels."""
    return [t.astimezone(LONDON).strftime("%a %d %H:%M")
            for t in times.fire_times(times.cron(expr, LONDON), start, end)]


def week(*days: str) -> list[str]:
    """Labels for 09:00 on the given days of the week Mon 1 to Sun 7 March 2021."""
    dates = {"Mon": 1, "Tue": 2, "Wed": 3, "Thu": 4, "Fri": 5, "Sat": 6, "Sun": 7}
    return [f"{day} {dates[day]:02d} 09:00" for day in days]


ALL_WEEK = week("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


@pytest.mark.parametrize(("expr", "expected"), [
    ("0 9 * * *", ALL_WEEK),
    ("0 9 * * 0", week("Sun")),
    ("0 9 * * 7", week("Sun")),
    ("0 9 * * 1", week("Mon")),
    ("0 9 * * MON", week("Mon")),
    ("0 9 * * sun", week("Sun")),
    ("0 9 * * 1-5", week("Mon", "Tue", "Wed", "Thu", "Fri")),
    ("0 9 * * 5-7", week("Fri", "Sat", "Sun")),
    ("0 9 * * 1-7", ALL_WEEK),
    ("0 9 * * 6,0", week("Sat", "Sun")),
    ("0 9 * * 1,3,5", week("Mon", "Wed", "Fri")),
    ("0 9 1-3 * *", week("Mon", "Tue", "Wed")),
    ("0 9 * * 0-6", ALL_WEEK),
    ("0 9 * * 0-2", week("Mon", "Tue", "Sun")),
    ("0 9 * * */2", week("Tue", "Thu", "Sat", "Sun")),
    ("0 9 * * 1-5/2", week("Mon", "Wed", "Fri")),
])
def test_cron_days_of_week(expr: str, expected: list[str]) -> None:
    assert fires(expr, utc(2021, 3, 1), utc(2021, 3, 8)) == expected


def test_cron_day_of_month_or_day_of_week() -> None:
    # April 2021: the 1st is a Thursday; Mondays are 5, 12, 19, 26
    assert fires("0 9 1 * 1", utc(2021, 4, 1), utc(2021, 5, 1)) == [
        "Thu 01 09:00", "Mon 05 09:00", "Mon 12 09:00", "Mon 19 09:00", "Mon 26 09:00",
    ]


@pytest.mark.parametrize(("expr", "message"), [
    ("", "expected 5 fields, got 0"),
    ("0 9 * *", "expected 5 fields, got 4"),
    ("0 9 * * MON extra", "expected 5 fields, got 6"),
    ("61 9 * * *", "bad cron '61 9 * * *'"),
    ("0 24 * * *", "bad cron '0 24 * * *'"),
    ("0 9 32 * *", "bad cron '0 9 32 * *'"),
    ("0 9 * 13 *", "bad cron '0 9 * 13 *'"),
    ("0 9 * * 8", "bad cron '0 9 * * 8': bad day of week '8' (use 0-7 or sun-sat)"),
    ("0 9 * * FUNDAY", "bad cron '0 9 * * FUNDAY'"),
    ("@daily", "expected 5 fields"),
])
def test_bad_cron(expr: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        times.cron(expr, LONDON)


def test_fire_times_window_is_half_open() -> None:
    got = times.fire_times(times.cron("0 9 * * *", UTC_ZONE), utc(2021, 3, 1, 9), utc(2021, 3, 3, 9))
    assert got == [utc(2021, 3, 1, 9), utc(2021, 3, 2, 9)]
    assert all(t.tzinfo is UTC for t in got)


def fires_per_day(expr: str, start: datetime, end: datetime) -> dict[str, list[datetime]]:
    """Fire times (UTC) of `expr` in London, grouped by London date."""
    days: dict[str, list[datetime]] = {}
    for t in times.fire_times(times.cron(expr, LONDON), start, end):
        days.setdefault(t.astimezone(LONDON).date().isoformat(), []).append(t)
    return days


def test_daily_0130_fires_once_on_the_day_clocks_go_back() -> None:
    days = fires_per_day("30 1 * * *", utc(2020, 10, 24), utc(2020, 10, 27))
    assert days == {
        "2020-10-24": [utc(2020, 10, 24, 0, 30)],
        "2020-10-25": [utc(2020, 10, 25, 0, 30)],  # 01:30 BST, the first of the two
        "2020-10-26": [utc(2020, 10, 26, 1, 30)],
    }


def test_half_hourly_in_the_repeated_hour_fires_on_the_first_pass_only() -> None:
    days = fires_per_day("*/30 1 * * *", utc(2020, 10, 25), utc(2020, 10, 26))
    assert days == {"2020-10-25": [utc(2020, 10, 25, 0), utc(2020, 10, 25, 0, 30)]}


def test_daily_0130_on_the_day_clocks_go_forward_fires_once_at_0230() -> None:
    # 01:30 does not exist on 28 March 2021; APScheduler moves it to 02:30 BST
    days = fires_per_day("30 1 * * *", utc(2021, 3, 27), utc(2021, 3, 30))
    assert days == {
        "2021-03-27": [utc(2021, 3, 27, 1, 30)],
        "2021-03-28": [utc(2021, 3, 28, 1, 30)],
        "2021-03-29": [utc(2021, 3, 29, 0, 30)],
    }
    assert days["2021-03-28"][0].astimezone(LONDON).strftime("%H:%M %Z") == "02:30 BST"


def test_window_starting_inside_the_repeated_hour_does_not_fire_the_repeat() -> None:
    # 01:00 UTC is 01:00 GMT, after 01:30 BST (00:30 UTC) has already fired
    assert times.fire_times(times.cron("30 1 * * *", LONDON), utc(2020, 10, 25, 1), utc(2020, 10, 26)) == []


def _asked_of_apscheduler(expr: str, tz: ZoneInfo, start: datetime, end: datetime) -> list[datetime]:
    """What `fires` gave before it computed fire times: each from APScheduler, chained from the
    one before, without the second pass of a repeated wall-clock time."""
    trigger, found = times.cron(expr, tz).trigger, []
    fire = trigger.get_next_fire_time(None, start)
    while fire is not None and fire < end:
        local = fire.astimezone(tz)
        if not (local.fold == 1 and local.replace(fold=0).astimezone(UTC) != fire):
            found.append(fire.astimezone(UTC))
        fire = trigger.get_next_fire_time(fire, fire)
    return found


DST_ZONES = ["Europe/London", "America/Santiago", "Australia/Lord_Howe", "America/St_Johns",
             "Pacific/Apia", "America/Havana", "Asia/Gaza", "Africa/Casablanca", "America/Nuuk",
             "Antarctica/Troll", "Asia/Kolkata", "UTC"]


def test_computed_fire_times_are_apschedulers_across_clock_changes() -> None:
    """Fire times are computed a day at a time, not asked of APScheduler one by one (12x
    faster); they must be the very times APScheduler gives, its quirks at clock changes included
    (e.g. it skips a fire in the hour after a change at midnight)."""
    rng = random.Random(14)

    def field(low: int, high: int) -> str:
        a = rng.randint(low, high)
        b = rng.randint(a, high)
        return rng.choice(["*", str(a), f"*/{rng.randint(2, 7)}", f"{a}-{b}", f"{a},{b}",
                           f"{a}-{b}/{rng.randint(1, 3)}"])

    checked = 0
    while checked < 150:
        tz = ZoneInfo(rng.choice(DST_ZONES))
        expr = " ".join([rng.choice(["0", "30", "*/15", "15,45", str(rng.randint(0, 59))]),
                         field(0, 23), rng.choice(["*", "*", field(1, 31), "last", "29-31"]),
                         field(1, 12), rng.choice(["*", field(0, 7), "mon", "sun"])])
        try:
            times.cron(expr, tz)
        except ValueError:
            continue
        start = utc(rng.choice([2011, 2021, 2024, 2027]), 1, 1) + timedelta(
            days=rng.uniform(0, 365), seconds=rng.randint(0, 86399))
        end = start + timedelta(days=rng.choice([2, 40, 400]))
        assert times.fire_times(times.cron(expr, tz), start, end) == \
            _asked_of_apscheduler(expr, tz, start, end), (expr, tz.key, start)
        checked += 1
