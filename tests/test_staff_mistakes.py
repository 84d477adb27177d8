"""What comms staff get wrong in jobs.yaml, caught by `oyez validate` before it goes out (issue 15)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from conftest import SAMPLE_ENV as ENV
from conftest import SAMPLE_HEAD as HEAD
from conftest import TOKEN

from adapters import facebook
from scheduler import config, plan, templates
from scheduler.errors import ConfigError


def parse(text: str, env: dict[str, str] = ENV) -> config.Config:
    return config.parse(text.encode(), env=env)


def problems(text: str, env: dict[str, str] = ENV) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(text, env)
    return info.value.problems


def expand(text: str) -> list[plan.Occurrence]:
    return plan.expand(parse(text), datetime(2020, 1, 1, tzinfo=UTC), datetime(2040, 1, 1, tzinfo=UTC))


# --- silent mistakes ------------------------------------------------------------------------------

@pytest.mark.parametrize(("body", "line"), [
    ("posts:\n  - id: a\n    at: 2030-01-01 09:00\n    message: Join our live chat #NHCAW #NoToHate\n", 10),
    ("live_events:\n  - id: ev\n    title: Chat #NoToHate\n    starts: 2030-01-02 18:00\n"
     "    ends: 2030-01-02 19:00\n", 9),
    ("live_events:\n  - id: ev\n    title: Chat\n    starts: 2030-01-02 18:00\n    ends: 2030-01-02 19:00\n"
     "    reminders:\n      - before: 1h\n        message: Soon #NoToHate\n", 14),
    ("live_events:\n  - id: ev\n    title: Chat\n    starts: 2030-01-02 18:00\n    ends: 2030-01-02 19:00\n"
     "    on_start: We're live #NoToHate\n", 12),
])
def test_hashtags_cut_off_by_a_yaml_comment_are_reported_at_their_line(body: str, line: int) -> None:
    [problem] = problems(HEAD + body)
    assert problem.startswith(f"jobs.yaml:{line}: ")
    assert "dropped" in problem and "comment" in problem and "double quotes" in problem


@pytest.mark.parametrize("message", [
    '"Join our live chat #NHCAW #NoToHate"',
    "|\n      Join our live chat #NHCAW #NoToHate",
    "Join our live chat#NHCAW",  # no space before '#': YAML keeps it
])
def test_quoted_or_block_hashtags_are_kept(message: str) -> None:
    [post] = parse(HEAD + f"posts:\n  - id: a\n    at: 2030-01-01 09:00  # a comment here is fine\n"
                          f"    message: {message}\n").posts
    assert "#NHCAW" in post.message


def test_the_adapter_declares_its_message_limit_and_validate_checks_it() -> None:
    assert facebook.MAX_TEXT == 63_206
    ok = "x" * 63_206
    assert parse(HEAD + f"posts:\n  - id: a\n    at: 2030-01-01 09:00\n    message: {ok}\n")
    [problem] = problems(HEAD + f"posts:\n  - id: a\n    at: 2030-01-01 09:00\n    message: {ok}y\n")
    assert problem == ("jobs.yaml:10: target police-page: 63,207 characters, over Facebook's limit of "
                       "63,206; give police-page its own text with `message_for: {police-page: ...}`")


def test_a_live_event_message_is_checked_as_it_will_be_published() -> None:
    title = "t" * 40_000  # fine alone; the template uses it twice
    body = (f"live_events:\n  - id: ev\n    title: {title}\n    starts: 2030-01-02 18:00\n"
            "    ends: 2030-01-02 19:00\n    on_start: '{title} {title}'\n")
    [problem] = problems(HEAD + body)
    assert problem.startswith("jobs.yaml:12: target police-page: 80,001 characters")


def test_a_template_field_in_a_plain_post_is_pointed_out() -> None:
    cfg = parse(HEAD + "posts:\n  - id: a\n    at: 2030-01-01 09:00\n    message: 'Join {title} at 6'\n")
    assert cfg.posts[0].message == "Join {title} at 6"  # still verbatim
    [warning] = cfg.warnings
    assert warning.startswith("jobs.yaml:10: {title} will be published as written")


@pytest.mark.parametrize("value", ["EAAB-PASTED-TOKEN-123", "'EAAB-PASTED-TOKEN-123'",
                                   "prefix-${FB_PAGE_ACCESS_TOKEN}"])
def test_a_secret_written_inline_is_refused_without_echoing_it(value: str) -> None:
    text = HEAD.replace("${FB_PAGE_ACCESS_TOKEN}", value) + "posts: []\n"
    [problem] = problems(text)
    assert problem.startswith("jobs.yaml:6: access_token: write the secret in .env")
    assert "PASTED" not in problem and TOKEN not in problem


@pytest.mark.parametrize(("var", "line"), [("FB_PAGE_ACCESS_TOKEN", 6), ("FB_PAGE_ID", 5)])
def test_an_empty_value_from_the_environment_is_refused(var: str, line: int) -> None:
    [problem] = problems(HEAD + "posts: []\n", {**ENV, var: "  "})
    assert problem == f"jobs.yaml:{line}: environment variable {var} is empty (set it or add it to .env)"


@pytest.mark.parametrize(("written", "page_id"), [("123456789012345", "123456789012345"),
                                                  ("0123", "0123")])
def test_an_unquoted_numeric_page_id_is_taken_as_written(written: str, page_id: str) -> None:
    cfg = parse(HEAD.replace("${FB_PAGE_ID}", written) + "posts: []\n")
    assert cfg.targets["police-page"].settings.page_id == page_id  # type: ignore[attr-defined]


def test_zero_grace_is_refused_at_its_line() -> None:
    [problem] = problems(HEAD + "posts:\n  - id: a\n    at: 2030-01-01 09:00\n    message: hi\n"
                                "    grace: 0s\n")
    assert problem == "jobs.yaml:11: grace must be longer than 0s, got '0s'"


@pytest.mark.parametrize("key", ["link", "image"])
def test_an_unclosed_ipv6_bracket_is_a_located_problem(key: str) -> None:
    [problem] = problems(HEAD + f"posts:\n  - id: a\n    at: 2030-01-01 09:00\n    message: hi\n"
                                f"    {key}: https://[bad/\n")
    assert problem.startswith(f"jobs.yaml:11: {key}: bad URL 'https://[bad/'")


# --- messages that say how to fix it ----------------------------------------------------------------

@pytest.mark.parametrize(("body", "line", "fragment"), [
    ("posts:\n  - id: a\n    at: 2030-01-01 09:00\n    message: Note: this is it\n", 10,
     'a ": " inside unquoted text starts a new key: put the whole text in double quotes'),
    ("posts:\n  - id: a\n    at: 2030-01-01 09:00\n    message: \u201cLive: now\u201d\n", 10,
     "curly quotes"),
    ('posts:\n  - id: a\n    message: "Hello there\n    at: 2030-01-01 09:00\n  - id: b\n', 9,
     "this quoted text has no closing quote"),
    ("posts:\n\t- id: a\n", 8, "indent with spaces"),
])
def test_yaml_errors_say_what_to_do_at_the_right_line(body: str, line: int, fragment: str) -> None:
    [problem] = problems(HEAD + body)
    assert problem.startswith(f"jobs.yaml:{line}: YAML syntax error: ")
    assert fragment in problem


@pytest.mark.parametrize(("body", "expected"), [
    ("live_events:\n  - id: ev\n    title: T\n    starts: 2030-01-02 18:00\n    ends: 2030-01-02 19:00\n"
     "    remiders: []\n", "jobs.yaml:12: unknown key 'remiders' (did you mean 'reminders'?)"),
    ("live_events:\n  - id: ev\n    title: T\n    starts: 2030-01-02 18:00\n    ends: 2030-01-02 19:00\n"
     "    reminders:\n      - befor: 1h\n        message: hi\n",
     "jobs.yaml:13: unknown key 'befor' (did you mean 'before'?)"),
    ("posts:\n  - id: a\n    at: 2030-01-01 09:00\n    mesage: hi\n",
     "jobs.yaml:10: unknown key 'mesage' (did you mean 'message'?)"),
    ("post: []\n", "jobs.yaml:7: unknown key 'post' (did you mean 'posts'?)"),
    ("posts:\n  - id: a\n    at: 2030-01-01 09:00\n    message: hi\n    targets: [police-pag]\n",
     "jobs.yaml:11: unknown target 'police-pag' (did you mean 'police-page'?)"),
    ("posts:\n  - id: a\n    at: 2030-01-01 09:00\n    message: hi\n    targets: [fb]\n",
     "jobs.yaml:11: unknown target 'fb' (known targets: police-page)"),
])
def test_unknown_keys_and_targets_suggest_the_known_ones(body: str, expected: str) -> None:
    assert expected in problems(HEAD + body + ("posts: []\n" if body.startswith("post:") else ""))


# --- scheduling that comms work needs ---------------------------------------------------------------

def test_a_recurring_post_may_start_on_a_date() -> None:
    body = ("posts:\n  - id: tip\n    cron: '0 9 * * MON'\n    from: 2030-01-14\n    until: 2030-01-28\n"
            "    message: hi\n")
    assert [o.local_due.date().isoformat() for o in expand(HEAD + body)] == [
        "2030-01-14", "2030-01-21", "2030-01-28"]


def test_from_must_come_before_until() -> None:
    body = ("posts:\n  - id: tip\n    cron: '0 9 * * MON'\n    from: 2030-02-01\n    until: 2030-01-28\n"
            "    message: hi\n")
    assert problems(HEAD + body) == ["jobs.yaml:11: until (2030-01-28) must be after from (2030-02-01)"]


CHAT = """\
live_events:
  - id: chat
    title: Live chat
    starts: {starts}
    ends: {ends}
    image: https://example.org/chat.jpg
    reminders:
{reminders}
"""


def reminders(starts: str, ends: str, *lines: str) -> dict[str, str]:
    body = CHAT.format(starts=starts, ends=ends, reminders="\n".join(lines))
    return {o.part: f"{o.local_due:%Y-%m-%d %H:%M %Z}" for o in expand(HEAD + body)}


def test_a_reminder_at_a_clock_time() -> None:
    assert reminders("2030-01-14 18:00", "2030-01-14 19:00",
                     "      - before: 2d", '        at: "09:00"', "        message: Thursday!",
                     "      - before: 1d", "        message: Tomorrow!") == {
        "reminder-2d-at-0900": "2030-01-12 09:00 GMT", "reminder-1d": "2030-01-13 18:00 GMT"}


@pytest.mark.parametrize(("before", "at", "fragment"), [
    ("36h", '"09:00"', "with at:, before: must be whole days"),
    ("2d", '"9am"', "bad clock time '9am'"),
    ("1h", '"09:00"', "reminder must come before the start"),
])
def test_a_clock_time_reminder_needs_whole_days(before: str, at: str, fragment: str) -> None:
    body = CHAT.format(starts="2030-01-14 18:00", ends="2030-01-14 19:00",
                       reminders=f"      - before: {before}\n        at: {at}\n        message: hi")
    [problem] = problems(HEAD + body)
    assert fragment in problem


@pytest.mark.parametrize(("starts", "expected"), [
    # clocks go forward on Sunday 2030-03-31 in London: 2 days before Monday 18:00 BST is Saturday 18:00 GMT
    ("2030-04-01 18:00", {"reminder-2d": "2030-03-30 18:00 GMT", "reminder-1h": "2030-04-01 17:00 BST",
                          "reminder-1d12h": "2030-03-31 06:00 BST"}),
    # clocks go back on Sunday 2030-10-27: 2 days before Monday 18:00 GMT is Saturday 18:00 BST
    ("2030-10-28 18:00", {"reminder-2d": "2030-10-26 18:00 BST", "reminder-1h": "2030-10-28 17:00 GMT",
                          "reminder-1d12h": "2030-10-27 06:00 GMT"}),
])
def test_days_before_are_calendar_days_across_a_clock_change(starts: str, expected: dict[str, str]) -> None:
    got = reminders(starts, starts.replace("18:00", "19:00"),
                    "      - before: 2d", "        message: a", "      - before: 1h", "        message: b",
                    "      - before: 1d12h", "        message: c")
    assert got == expected


def test_live_event_posts_carry_the_image() -> None:
    body = CHAT.format(starts="2030-01-14 18:00", ends="2030-01-14 19:00",
                       reminders="      - before: 1h\n        message: hi")
    [o] = expand(HEAD + body)
    assert o.image == "https://example.org/chat.jpg"


@pytest.mark.parametrize(("spec", "hour", "expected"), [
    ("%-I%P", 18, "6pm"), ("%-I%P", 9, "9am"), ("%-I:%M%P", 18, "6:00pm"), ("%%P %-I%p", 18, "%P 6PM"),
])
def test_lower_case_am_pm(spec: str, hour: int, expected: str) -> None:
    values = {"starts": datetime(2030, 1, 14, hour, tzinfo=UTC)}
    assert templates.render(f"{{starts:{spec}}}", values) == expected
