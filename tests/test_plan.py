"""Planning: which occurrences fall due in a window, with their ledger keys, deadlines and text."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from scheduler import config, plan
from scheduler.plan import Occurrence

HEAD = """\
timezone: Europe/London
targets:
  page:
    adapter: facebook_page
    page_id: "111"
    access_token: ${TOKEN_111}
"""
PLAN_ENV = {"TOKEN_111": "token-111", "TOKEN_222": "token-222"}
SECOND_TARGET = """\
  other:
    adapter: facebook_page
    page_id: "222"
    access_token: ${TOKEN_222}
"""
CHAT = """\
live_events:
  - id: chat
    title: Live chat on hate crime
    starts: {starts}
    ends: {ends}
    grace: {grace}
    link: https://example.org/chat
    reminders:
      - before: 2d
        message: "{{title}}: Thursday {{starts:%-I%p}}."
      - before: 1h
        message: "{{title}} starts in one hour."
    on_start: "We're live now: {{title}}"
    on_end: "Thanks for joining {{title}}"
"""


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def chat(starts: str = "2030-01-10 18:00", ends: str = "2030-01-10 19:00", grace: str = "15m") -> str:
    return CHAT.format(starts=starts, ends=ends, grace=grace)


YEAR_2030 = (utc(2030, 1, 1), utc(2031, 1, 1))


def expand(body: str, start: datetime = YEAR_2030[0], end: datetime = YEAR_2030[1],
           head: str = HEAD) -> list[Occurrence]:
    return plan.expand(config.parse((head + body).encode(), env=PLAN_ENV), start, end)


SCHEDULE = """\
posts:
  - id: announce
    at: 2030-01-08 07:49
    message: Live chat on Thursday
    image: https://example.org/chat.jpg
  - id: tip
    cron: "0 9 * * MON"
    until: 2030-01-13
    message: Lock your car.
""" + chat()


def test_keys_parts_and_order() -> None:
    found = [(o.due, o.key, o.part) for o in expand(SCHEDULE)]
    assert found == [
        (utc(2030, 1, 7, 9), "cron:tip:page:2030-01-07T09:00:00Z", "post"),
        (utc(2030, 1, 8, 7, 49), "post:announce:page", "post"),
        (utc(2030, 1, 8, 18), "live:chat:reminder-2d:2030-01-10T18:00:00Z:page", "reminder-2d"),
        (utc(2030, 1, 10, 17), "live:chat:reminder-1h:2030-01-10T18:00:00Z:page", "reminder-1h"),
        (utc(2030, 1, 10, 18), "live:chat:start:2030-01-10T18:00:00Z:page", "start"),
        (utc(2030, 1, 10, 19), "live:chat:end:2030-01-10T18:00:00Z:page", "end"),
    ]


def test_occurrences_carry_the_job_fields() -> None:
    by_key = {o.key: o for o in expand(SCHEDULE)}
    announce = by_key["post:announce:page"]
    assert (announce.job_id, announce.target, announce.text) == ("announce", "page", "Live chat on Thursday")
    assert (announce.link, announce.image, announce.tz_name) == (None, "https://example.org/chat.jpg",
                                                                "Europe/London")
    start = by_key["live:chat:start:2030-01-10T18:00:00Z:page"]
    assert (start.job_id, start.link, start.image) == ("chat", "https://example.org/chat", None)


def post_at(at: str) -> str:
    return f"posts:\n  - id: announce\n    at: {at}\n    message: hi\n"


def test_moving_a_one_off_post_keeps_its_key() -> None:
    [before] = expand(post_at("2030-01-08 07:49"))
    [after] = expand(post_at("2030-01-09 12:00"))
    assert before.key == after.key == "post:announce:page"
    assert after.due - before.due == timedelta(days=1, hours=4, minutes=11)


def test_moving_a_live_event_gives_it_fresh_keys() -> None:
    before = expand(chat("2030-01-10 18:00", "2030-01-10 19:00"))
    after = expand(chat("2030-01-11 18:00", "2030-01-11 19:00"))
    assert [o.part for o in before] == [o.part for o in after]
    assert not {o.key for o in before} & {o.key for o in after}
    assert all(":2030-01-11T18:00:00Z:" in o.key for o in after)


ONE_REMINDER = """\
live_events:
  - id: e
    title: T
    starts: 2030-01-20 18:00
    ends: 2030-01-20 19:00
    reminders:
      - before: {before}
        message: soon
"""


@pytest.mark.parametrize(("before", "part"), [
    ("2d", "reminder-2d"), ("1h", "reminder-1h"), ("90m", "reminder-1h30m"), ("30s", "reminder-30s"),
    ("1w", "reminder-7d"), ("1d12h", "reminder-1d12h"),
])
def test_reminder_parts_are_named_by_their_offset(before: str, part: str) -> None:
    [reminder] = expand(ONE_REMINDER.format(before=before))
    assert reminder.part == part
    assert reminder.key == f"live:e:{part}:2030-01-20T18:00:00Z:page"


STARTS, ENDS = utc(2030, 1, 10, 18), utc(2030, 1, 10, 19)


@pytest.mark.parametrize(("grace", "deadlines"), [
    ("15m", {"reminder-2d": STARTS - timedelta(days=2) + timedelta(minutes=15),
             "reminder-1h": STARTS - timedelta(minutes=45),
             "start": STARTS + timedelta(minutes=15),
             "end": ENDS + timedelta(minutes=15)}),
    # a reminder is never sent once the event has started, nor "we're live" once it has ended
    ("2h", {"reminder-2d": STARTS - timedelta(days=2) + timedelta(hours=2),
            "reminder-1h": STARTS,
            "start": ENDS,
            "end": ENDS + timedelta(hours=2)}),
])
def test_live_event_deadlines(grace: str, deadlines: dict[str, datetime]) -> None:
    assert {o.part: o.deadline for o in expand(chat(grace=grace))} == deadlines


@pytest.mark.parametrize(("grace_line", "grace"), [
    ("", timedelta(minutes=15)),
    ("    grace: 2h\n", timedelta(hours=2)),
])
def test_post_deadline_is_due_plus_grace(grace_line: str, grace: timedelta) -> None:
    [o] = expand(post_at("2030-01-08 07:49") + grace_line)
    assert o.deadline == o.due + grace == utc(2030, 1, 8, 7, 49) + grace


def test_templates_render_in_the_events_time_zone() -> None:
    body = chat("2030-10-17 18:00", "2030-10-17 19:00").replace(
        'on_start: "We\'re live now: {title}"',
        'on_start: "{title} {starts:%-I%p} ({starts:%H:%M %Z}) to {ends:%H:%M}, {id}, {link}, {{braces}}"')
    texts = {o.part: o.text for o in expand(body)}
    assert texts == {
        "reminder-2d": "Live chat on hate crime: Thursday 6PM.",
        "reminder-1h": "Live chat on hate crime starts in one hour.",
        "start": "Live chat on hate crime 6PM (18:00 BST) to 19:00, chat, https://example.org/chat, {braces}",
        "end": "Thanks for joining Live chat on hate crime",
    }


def test_post_messages_are_sent_verbatim() -> None:
    [o] = expand("posts:\n  - id: p\n    at: 2030-01-08 07:49\n    message: 'Use {title} and ${HOME}'\n")
    assert o.text == "Use {title} and ${HOME}"


def test_drafts_are_planned_and_marked() -> None:
    body = (post_at("2030-01-08 07:49") + "    draft: true\n"
            + "  - id: real\n    at: 2030-01-08 08:00\n    message: hi\n"
            + chat().replace("    grace: 15m\n", "    grace: 15m\n    draft: true\n"))
    drafts = {o.job_id: o.draft for o in expand(body)}
    assert drafts == {"announce": True, "real": False, "chat": True}


def test_one_occurrence_per_target() -> None:
    body = (post_at("2030-01-08 07:49") + "    targets: [page, other]\n"
            + chat().replace("    grace: 15m\n", "    grace: 15m\n    targets: [other, page]\n"))
    found = expand(body, head=HEAD + SECOND_TARGET)
    assert len(found) == 2 + 4 * 2
    assert {o.key for o in found if o.job_id == "announce"} == {"post:announce:page", "post:announce:other"}
    assert {(o.part, o.target) for o in found if o.part == "start"} == {("start", "page"), ("start", "other")}


@pytest.mark.parametrize(("until", "mondays"), [
    ("2030-01-13", [7]),
    ("2030-01-14", [7, 14]),  # a date means the end of that day
    ("2030-01-14 09:01", [7, 14]),
    ("2030-01-06", []),
])
def test_until_bounds_a_cron_post(until: str, mondays: list[int]) -> None:
    body = f"posts:\n  - id: tip\n    cron: '0 9 * * MON'\n    until: {until}\n    message: hi\n"
    assert [o.due for o in expand(body)] == [utc(2030, 1, day, 9) for day in mondays]


@pytest.mark.parametrize(("start", "end", "planned"), [
    (utc(2030, 1, 8, 7, 49), utc(2030, 1, 8, 7, 50), True),  # start is inclusive
    (utc(2030, 1, 8, 7, 0), utc(2030, 1, 8, 7, 49), False),  # end is exclusive
    (utc(2030, 1, 8, 7, 50), utc(2031, 1, 1), False),
])
def test_window_is_half_open(start: datetime, end: datetime, planned: bool) -> None:
    assert bool(expand(post_at("2030-01-08 07:49"), start, end)) is planned


def test_window_keeps_only_the_parts_inside_it() -> None:
    found = expand(chat(), utc(2030, 1, 10), utc(2030, 1, 10, 18, 30))
    assert [o.part for o in found] == ["reminder-1h", "start"]


FALL_BACK = """\
posts:
  - id: once
    at: 2020-10-25 01:30
    message: hi
  - id: daily
    cron: "30 1 * * *"
    message: hi
"""


def test_0130_on_the_day_clocks_go_back_is_planned_once() -> None:
    found = expand(FALL_BACK, utc(2020, 10, 24, 12), utc(2020, 10, 25, 12))
    assert [(o.key, o.due) for o in found] == [  # same instant: file order
        ("post:once:page", utc(2020, 10, 25, 0, 30)),
        ("cron:daily:page:2020-10-25T00:30:00Z", utc(2020, 10, 25, 0, 30)),
    ]
    assert {o.local_due.strftime("%H:%M %Z") for o in found} == {"01:30 BST"}


def test_0130_on_the_day_clocks_go_back_is_planned_once_across_sliding_windows() -> None:
    keys = {
        o.key
        for minutes in range(0, 24 * 60, 15)
        for o in expand(FALL_BACK, utc(2020, 10, 24, 12) + timedelta(minutes=minutes),
                        utc(2020, 10, 25, 12) + timedelta(minutes=minutes))
        if o.local_due.date() == date(2020, 10, 25)
    }
    assert keys == {"cron:daily:page:2020-10-25T00:30:00Z", "post:once:page"}


def test_results_are_sorted_by_due_time_whatever_the_file_order() -> None:
    body = (chat() + "posts:\n  - id: late\n    at: 2030-01-09 10:00\n    message: hi\n"
            + "  - id: early\n    at: 2030-01-01 10:00\n    message: hi\n")
    dues = [o.due for o in expand(body)]
    assert dues == sorted(dues)
    assert len(dues) == 6


@pytest.mark.parametrize(("cron", "ahead"), [
    ("0 9 * * MON", timedelta(days=7)),  # at most daily: the whole horizon
    ("30 8 * * *", timedelta(days=7)),
    ("0 * * * *", timedelta(days=5)),  # hourly: 120 fires
    ("*/5 * * * *", timedelta(hours=10)),  # every 5 minutes: 120 fires
    ("* * * * *", plan.MIN_AHEAD),  # every minute: 120 fires would be less than the floor
])
def test_a_frequent_rule_shortens_the_ledger_window(cron: str, ahead: timedelta) -> None:
    text = HEAD + f'posts:\n  - id: r\n    cron: "{cron}"\n    message: m\n'
    cfg = config.parse(text.encode(), env=PLAN_ENV)
    now = utc(2030, 1, 1)
    start, end = plan.ledger_window(cfg, now, timedelta(days=7))
    assert start == now - plan.LOOKBACK
    assert end == now + ahead
    assert plan.REFRESH < plan.MIN_AHEAD  # the window is rolled forward before it runs out


def test_changed_jobs_are_the_entries_a_reload_did_not_take_over() -> None:
    def parse(posts: str, previous: config.Config | None = None, head: str = HEAD) -> config.Config:
        return config.parse((head + "posts:\n" + posts).encode(), env=PLAN_ENV, previous=previous,
                            remember=True)

    a = "  - {id: a, at: 2030-01-01 09:00, message: A}\n"
    b = "  - {id: b, at: 2030-01-01 10:00, message: B}\n"
    old = parse(a + b)
    assert plan.changed_jobs(old, parse(a + b.replace("B", "B2"), old)) == {"b"}
    assert plan.changed_jobs(old, parse(a, old)) == {"b"}  # removed
    assert plan.changed_jobs(old, parse(a + b + "  - {id: c, cron: 0 9 * * *, message: C}\n", old)) == {"c"}
    # a zone for every entry: nothing is taken over, every job has changed
    assert plan.changed_jobs(old, parse(a + b, old, HEAD.replace("Europe/London", "UTC"))) == {"a", "b"}
    # a rule firing more than once a day moves the whole window's end: all of it is synced
    frequent = "  - {id: c, cron: '*/5 * * * *', message: C}\n"
    assert plan.changed_jobs(old, parse(a + b + frequent, old)) is None


def test_count_is_the_number_of_occurrences_expand_lists() -> None:
    """`oyez validate` counts a month of occurrences without making them."""
    text = HEAD + SECOND_TARGET + """\
posts:
  - {id: once, at: 2030-01-03 09:00, message: m, targets: [page, other], first_comment: c}
  - {id: daily, cron: 0 9 * * *, message: m, targets: [page], until: 2030-01-20}
  - {id: draft, cron: 0 10 * * *, message: m, targets: [page], draft: true}
live_events:
  - id: chat
    title: T
    starts: 2030-01-10 18:00
    ends: 2030-01-10 19:00
    targets: [page, other]
    reminders: [{before: 2d, message: "{title}"}, {before: 1h, message: "{title}"}]
    on_start: "{title}"
"""
    cfg = config.parse(text.encode(), env=PLAN_ENV)
    start = datetime(2030, 1, 1, tzinfo=UTC)
    for days in (1, 3, 9, 10, 40):
        end = start + timedelta(days=days)
        assert plan.count(cfg, start, end) == len([o for o in plan.expand(cfg, start, end) if not o.draft])
    assert plan.count(cfg, start, start + timedelta(days=40)) == 4 + 20 + 6  # until: the 20th, included
