"""Validating jobs.yaml: every problem is reported as `jobs.yaml:LINE: message`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import SecretStr

from scheduler import config, yamlfile
from scheduler.errors import ConfigError

TOKEN = "EAAB-SECRET-CANARY"
ENV = {"FB_PAGE_ID": "1234567890", "FB_PAGE_ACCESS_TOKEN": TOKEN}
SAMPLE = Path(__file__).resolve().parent.parent / "jobs.yaml"
T = "2030-01-01 09:00"  # a valid time for rows about something else


def head(adapter: str = "facebook_page", *extra: str) -> str:
    """Lines 1-6: a time zone and one target; `extra` target settings follow from line 7."""
    lines = ["timezone: Europe/London", "targets:", "  page:", f"    adapter: {adapter}",
             "    page_id: ${FB_PAGE_ID}", "    access_token: ${FB_PAGE_ACCESS_TOKEN}", *extra]
    return "\n".join(lines) + "\n"


HEAD = head()
NONE = "posts: []\n"  # a file must say it has no posts; appended last so line numbers hold


def item(section: str, fields: dict[str, str]) -> str:
    """A one-item `section` list, fields in the order given (the section key is its first line)."""
    first, *rest = fields.items()
    lines = [f"{section}:", f"  - {first[0]}: {first[1]}", *(f"    {k}: {v}" for k, v in rest)]
    return "\n".join(lines) + "\n"


def post(**fields: str) -> str:
    """posts: / - id: a / then `fields`, one a line."""
    return item("posts", {"id": "a", **fields})


def event(**fields: str) -> str:
    """live_events: / - id: ev / title / starts / ends (4 lines) / then `fields`."""
    base = {"id": "ev", "title": "T", "starts": "2030-01-02 18:00", "ends": "2030-01-02 19:00"}
    return item("live_events", {**base, **fields})


def problems(text: str, env: dict[str, str] = ENV) -> list[str]:
    """The problems parsing `text` reports (fails if it parses)."""
    with pytest.raises(ConfigError) as caught:
        config.parse(text.encode(), env=env)
    return caught.value.problems


# After HEAD (lines 1-6): post() puts `posts:` on 7, `- id` on 8 and its fields from 9;
# event() puts `live_events:` on 7, `- id` on 8, title 9, starts 10, ends 11, extra fields from 12.
ERRORS = [
    pytest.param(HEAD + "colour: red\n" + NONE, 7, "unknown key 'colour'", id="unknown-top-level-key"),
    pytest.param(HEAD + post(at=T, message="hi", colour="red"), 11, "unknown key 'colour'",
                 id="unknown-post-key"),
    pytest.param(head("facebook_page", "    colour: red") + NONE, 7, "unknown key 'colour'",
                 id="unknown-target-key"),
    pytest.param(HEAD + event(reminders="\n      - before: 1h\n        message: m\n        when: now"), 15,
                 "unknown key 'when'", id="unknown-reminder-key"),
    pytest.param(HEAD + post(at=T, message="hi") + event(id="a"), 12,
                 "duplicate id 'a' (first used at jobs.yaml:8)", id="duplicate-id-post-and-event"),
    pytest.param(HEAD + post(id="bad id!", at=T, message="hi"), 8, "bad id 'bad id!'", id="bad-id"),
    pytest.param(HEAD + post(at="tomorrow", message="hi"), 9, "bad time 'tomorrow'", id="bad-time"),
    pytest.param(HEAD + post(at="2030-01-01", message="hi"), 9, "a time of day is required", id="date-only"),
    pytest.param(HEAD + post(at="2021-03-28 01:30", message="hi"), 9, "does not exist in Europe/London",
                 id="time-skipped-by-dst"),
    pytest.param(HEAD + post(at=T, grace="soon", message="hi"), 10, "bad duration 'soon'", id="bad-grace"),
    pytest.param(HEAD + post(cron="'61 9 * * *'", message="hi"), 9, "bad cron '61 9 * * *'", id="bad-cron"),
    pytest.param(HEAD + post(cron="'0 9 * * 1'", until="someday", message="hi"), 10, "bad date 'someday'",
                 id="bad-until"),
    pytest.param(HEAD + post(timezone="Mars/Olympus", at=T, message="hi"), 9,
                 "unknown time zone 'Mars/Olympus'", id="unknown-time-zone"),
    pytest.param(HEAD + post(at=T, targets="[page, nope]", message="hi"), 10, "unknown target 'nope'",
                 id="unknown-target"),
    pytest.param(head("myspace") + NONE, 4,
                 "unknown adapter 'myspace' (known adapters: bluesky, facebook_page, instagram, mastodon, "
                 "threads, webhook)",
                 id="unknown-adapter"),
    pytest.param(HEAD + event(on_start="'hi {nope}'"), 12, "unknown template field {nope}",
                 id="unknown-template-field"),
    pytest.param(HEAD + event(on_end="'{title.__class__}'"), 12, "unknown template field {title.__class__}",
                 id="template-attribute"),
    pytest.param(HEAD + event(on_end="'{title[0]}'"), 12, "unknown template field {title[0]}",
                 id="template-index"),
    pytest.param(HEAD + event(on_end="'{starts!r}'"), 12, "may only carry a plain format",
                 id="template-conversion"),
    pytest.param(HEAD + event(on_end="'{title:{starts}}'"), 12, "may only carry a plain format",
                 id="template-nested-field"),
    pytest.param(HEAD + event(on_end="'{title'"), 12, "bad template", id="template-unclosed"),
    pytest.param(HEAD + event(on_end="'{title:d}'"), 12, "bad template: Unknown format code 'd'",
                 id="template-bad-format"),
    pytest.param(HEAD + event(reminders="\n      - before: 0s\n        message: m"), 13,
                 "reminder must come before the start, got '0s'", id="reminder-0s"),
    pytest.param(HEAD + event(reminders="\n      - before: 1h\n        message: m\n      - before: 60m\n"
                 "        message: n"), 15, "two reminders at the same time (reminder-1h)",
                 id="two-reminders-same-time"),
    pytest.param(HEAD + event(ends="2030-01-02 17:00"), 11, "must be after starts", id="ends-before-starts"),
    pytest.param(HEAD + event(ends="2030-01-02 18:00"), 11, "must be after starts", id="ends-at-starts"),
    pytest.param(HEAD + post(at=T, message="hi: there"), 10, "YAML syntax error", id="yaml-syntax"),
    pytest.param(HEAD + "timezone: UTC\n", 7, "duplicate key 'timezone'", id="duplicate-yaml-key"),
    pytest.param(HEAD + post(at=T, message="hi", link="javascript:alert(1)"), 11,
                 "link: must be an http(s) URL, got 'javascript:alert(1)'", id="non-http-link"),
    pytest.param(HEAD + post(at=T, message="hi", image="file:///etc/passwd"), 11,
                 "image: must be an http(s) URL", id="non-http-image"),
    pytest.param(HEAD + event(link="ftp://example.org/x"), 12, "link: must be an http(s) URL",
                 id="non-http-event-link"),
    pytest.param(HEAD + post(at=T, cron="'0 9 * * *'", message="hi"), 8, "exactly one of at: or cron:",
                 id="both-at-and-cron"),
    pytest.param(HEAD + post(message="hi"), 8, "exactly one of at: or cron:", id="neither-at-nor-cron"),
    pytest.param(HEAD + post(at=T, until="2030-02-01", message="hi"), 10, "until: only applies to cron posts",
                 id="until-on-one-off"),
    pytest.param(HEAD + post(at=T, message="' '"), 10, "message is empty", id="empty-message"),
    pytest.param(HEAD + post(at=T), 8, "missing required key 'message'", id="missing-message"),
    pytest.param("", 1, "file is empty", id="empty-file"),
    pytest.param("# nothing but a comment\n", 1, "file is empty", id="comment-only-file"),
    pytest.param("- a\n- b\n", 1, "expected a mapping", id="list-file"),
    pytest.param("just words\n", 1, "expected a mapping", id="scalar-file"),
    pytest.param("timezone: UTC\n" + NONE, 1, "missing required key 'targets'", id="no-targets"),
    pytest.param(HEAD + "version: 2\n" + NONE, 7, "unsupported schema version 2 (this oyez reads 1)",
                 id="unsupported-version"),
]


@pytest.mark.parametrize(("text", "line", "fragment"), ERRORS)
def test_each_error_is_located(text: str, line: int, fragment: str) -> None:
    [problem] = problems(text)
    assert problem.startswith(f"jobs.yaml:{line}: "), problem
    assert fragment in problem


def test_missing_env_variable_is_an_error_at_its_line() -> None:
    assert problems(HEAD + NONE, env={"FB_PAGE_ID": "1"}) == [
        "jobs.yaml:6: environment variable FB_PAGE_ACCESS_TOKEN is not set (set it or add it to .env)",
    ]


def test_missing_env_variable_is_only_a_warning_when_not_strict() -> None:
    parsed = config.parse((HEAD + NONE).encode(), env={}, strict_env=False)
    note = "is not set (needed to send; fine for a review or a dry run)"
    assert parsed.warnings == (
        f"jobs.yaml:5: environment variable FB_PAGE_ID {note}",
        f"jobs.yaml:6: environment variable FB_PAGE_ACCESS_TOKEN {note}",
    )
    assert parsed.targets["page"].settings.page_id == "${FB_PAGE_ID}"  # type: ignore[attr-defined]


MANY_PROBLEMS = HEAD + """\
posts:
  - id: a
    at: tomorrow
    message: hi
  - id: b
    cron: "61 9 * * *"
    message: hi
  - id: c
    at: 2030-01-01 09:00
    targets: [nope]
    message: hi
live_events:
  - id: a
    title: T
    starts: 2030-01-02 18:00
    ends: 2030-01-02 17:00
    on_start: "{nope}"
"""


def test_every_problem_is_reported_in_line_order() -> None:
    found = problems(MANY_PROBLEMS, env={"FB_PAGE_ACCESS_TOKEN": TOKEN})
    assert [int(p.split(":")[1]) for p in found] == [5, 9, 12, 16, 19, 22, 23]
    assert "FB_PAGE_ID is not set" in found[0]
    assert "duplicate id 'a'" in found[4]


def test_shape_and_meaning_problems_are_reported_together() -> None:
    found = problems(HEAD + post(at="tomorrow", message="hi", colour="red"))
    assert [p.split(": ", 1)[0] for p in found] == ["jobs.yaml:9", "jobs.yaml:11"]


def test_sample_jobs_file_is_valid() -> None:
    parsed = config.load(SAMPLE, env=ENV)
    assert (len(parsed.targets), len(parsed.posts), len(parsed.live_events)) == (1, 2, 1)
    assert parsed.warnings == ()
    [chat] = parsed.live_events
    assert [r.part for r in chat.reminders] == ["reminder-2d", "reminder-1h"]


def test_env_variables_are_not_expanded_outside_targets() -> None:
    text = HEAD + post(at=T, message="'token: ${FB_PAGE_ACCESS_TOKEN}'", link="https://e.org/${FB_PAGE_ID}")
    text += event(title="${FB_PAGE_ID}")
    parsed = config.parse(text.encode(), env=ENV)
    [announce], [chat] = parsed.posts, parsed.live_events
    assert announce.message == "token: ${FB_PAGE_ACCESS_TOKEN}"
    assert announce.link == "https://e.org/${FB_PAGE_ID}"
    assert chat.title == "${FB_PAGE_ID}"


TWO_TARGETS = head("facebook_page", "  other:", "    adapter: facebook_page", "    page_id: '2'",
                   "    access_token: ${FB_PAGE_ACCESS_TOKEN}")  # lines 1-10


@pytest.mark.parametrize(("text", "targets"), [
    (HEAD + post(at=T, message="hi"), ("page",)),
    (TWO_TARGETS + post(at=T, targets="[other, page]", message="hi"), ("other", "page")),
])
def test_targets_may_be_omitted_only_with_one_target(text: str, targets: tuple[str, ...]) -> None:
    [announce] = config.parse(text.encode(), env=ENV).posts
    assert announce.targets == targets


@pytest.mark.parametrize("job", [post(at=T, message="hi"), event()])
def test_targets_are_required_with_two_targets(job: str) -> None:
    assert problems(TWO_TARGETS + job) == [
        "jobs.yaml:12: targets: required when more than one target is defined",
    ]


def test_access_token_is_a_secret_and_not_in_repr() -> None:
    parsed = config.load(SAMPLE, env=ENV)
    token = parsed.targets["police-page"].settings.access_token  # type: ignore[attr-defined]
    assert isinstance(token, SecretStr)
    assert token.get_secret_value() == TOKEN
    assert TOKEN not in repr(parsed)
    assert TOKEN not in str(parsed)


@pytest.mark.parametrize("text", [
    pytest.param(head("facebook_page", "    secret: ${FB_PAGE_ACCESS_TOKEN}") + NONE, id="unknown-key"),
    pytest.param(head("myspace") + post(at="tomorrow", message="${FB_PAGE_ACCESS_TOKEN}"),
                 id="other-problems"),
    pytest.param(head("facebook_page", "    graph_url: ${FB_PAGE_ACCESS_TOKEN}") + NONE,
                 id="token-as-graph-url"),
    pytest.param(head("facebook_page", "    graph_url: http://example.org/?t=${FB_PAGE_ACCESS_TOKEN}") + NONE,
                 id="token-in-graph-url"),
])
def test_token_never_appears_in_config_errors(text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config.parse(text.encode(), env=ENV)
    assert caught.value.problems
    assert TOKEN not in str(caught.value)
    assert not any(TOKEN in p for p in caught.value.problems)


@pytest.mark.parametrize(("text", "line"), [
    pytest.param(HEAD + post(at=T, message="!!python/object/apply:os.system 'echo pwned'"), 10, id="scalar"),
    pytest.param(HEAD + post(at=T, message="!!python/name:os.system ''"), 10, id="name"),
    pytest.param(HEAD + post(at=T, message="!!binary aGk="), 10, id="binary"),
    pytest.param(HEAD + post(at=T, message="!local hi"), 10, id="local-tag"),
    pytest.param(HEAD + post(at=T, targets="!!python/object/apply:os.system [page]", message="hi"), 10,
                 id="sequence"),
    pytest.param(HEAD + f"posts:\n  - !!python/object/new:os.system {{id: a, at: '{T}', message: m}}\n", 8,
                 id="mapping"),
])
def test_yaml_tags_are_rejected(text: str, line: int) -> None:
    found = problems(text)
    assert any(p.startswith(f"jobs.yaml:{line}: ") and "tag" in p for p in found), found


def billion_laughs(levels: int = 9, fan_out: int = 10) -> str:
    """Lines 7 .. 7+levels: each alias list holds `fan_out` copies of the one before."""
    lines = ["a0: &a0 [" + ", ".join(["lol"] * fan_out) + "]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * fan_out) + "]" for i in range(1, levels + 1)]
    return HEAD + "\n".join(lines) + "\n"


@pytest.mark.timeout(10)
def test_alias_bomb_is_rejected_with_a_location() -> None:
    [problem] = problems(billion_laughs())
    match = re.match(r"jobs\.yaml:(\d+): too many values", problem)
    assert match and 7 <= int(match.group(1)) <= 16, problem


def test_file_over_the_size_cap_is_rejected() -> None:
    padding = "#" * 100 + "\n"
    big = HEAD + NONE + padding * (yamlfile.MAX_BYTES // len(padding) + 1)
    assert problems(big) == ["jobs.yaml:1: file is larger than 4 MiB"]
    config.parse(big[: yamlfile.MAX_BYTES].encode(), env=ENV)  # just under the cap is fine


def test_non_utf8_file_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"^jobs\.yaml:1: not UTF-8 text"):
        config.parse((HEAD + NONE).encode() + b"# \xff\n", env=ENV)


def test_template_padding_cannot_blow_up_the_message() -> None:
    [problem] = problems(HEAD + event(on_start="'{title:>100000000}'"))
    assert problem.startswith("jobs.yaml:12: ")


@pytest.mark.parametrize(("text", "expected"), [
    (HEAD + NONE + "---\nposts: []\n", "jobs.yaml:8: YAML syntax error: but found another document"),
    (HEAD + "posts: *nowhere\n", "jobs.yaml:7: YAML syntax error: found undefined alias 'nowhere'"),
    (HEAD + "x: &a 1\ny: &a 2\n" + NONE, "jobs.yaml:8: YAML syntax error: second occurrence"),
    (HEAD + "<<: {posts: []}\n" + NONE, "jobs.yaml:7: unsupported mapping key"),
    (HEAD + "? [posts]\n: []\n" + NONE, "jobs.yaml:7: unsupported mapping key"),
])
def test_yaml_structure_mistakes_are_located(text: str, expected: str) -> None:
    """The file is read from the parser's events, without a node tree: what composing it
    refused (a second document, unknown or repeated anchors, merge and complex keys) still is."""
    assert problems(text) == [expected]


def test_an_alias_reuses_its_value_and_counts_against_the_budget() -> None:
    text = HEAD + f"posts:\n  - &p {{id: a, at: '{T}', message: hi}}\nlive_events: []\nspare: [*p, *p]\n"
    assert problems(text) == ["jobs.yaml:10: unknown key 'spare' (known keys: version, timezone, "
                              "targets, posts, live_events, alerts)"]


# --- a reload reuses the entries that did not change ------------------------------

def reparse(before: str, after: str, env: dict[str, str] = ENV) -> tuple[config.Config, config.Config]:
    """`before` parsed, then `after` parsed with it as the running config."""
    old = config.parse(before.encode(), env=env, remember=True)
    return old, config.parse(after.encode(), env=env, previous=old)


TWO_POSTS = HEAD + post(at=T, message="one") + "  - id: b\n    at: 2030-01-02 09:00\n    message: two\n"


def test_unchanged_entries_are_reused_and_changed_ones_built_again() -> None:
    old, new = reparse(TWO_POSTS, TWO_POSTS.replace("message: two", "message: two, edited"))
    assert new.posts[0] is old.posts[0]
    assert new.posts[1] is not old.posts[1] and new.posts[1].message == "two, edited"
    again = config.parse(TWO_POSTS.encode(), env=ENV, previous=new)  # and back
    assert again.posts[0] is old.posts[0] and again.posts[1].message == "two"
    assert not config.parse(TWO_POSTS.encode(), env=ENV).entries  # validate keeps no index


def test_a_new_time_zone_is_applied_to_unchanged_entries() -> None:
    old, new = reparse(TWO_POSTS, TWO_POSTS.replace("Europe/London", "America/New_York"))
    assert [p.at.hour for p in old.posts] == [9, 9]  # January: London is UTC
    assert [p.at.hour for p in new.posts] == [14, 14]
    assert all(p.tz.key == "America/New_York" for p in new.posts)


def test_a_new_target_is_seen_by_unchanged_entries() -> None:
    """With a second target, a post without `targets:` no longer knows where to go."""
    second = ("  other:\n    adapter: facebook_page\n    page_id: '2'\n"
              "    access_token: ${FB_PAGE_ACCESS_TOKEN}\n")
    with pytest.raises(ConfigError) as caught:
        reparse(TWO_POSTS, TWO_POSTS.replace("posts:\n", second + "posts:\n", 1))
    assert caught.value.problems == [
        "jobs.yaml:12: targets: required when more than one target is defined",
        "jobs.yaml:15: targets: required when more than one target is defined"]


def test_a_text_newly_cut_by_a_comment_is_reported_though_its_data_is_the_same() -> None:
    with pytest.raises(ConfigError) as caught:
        reparse(TWO_POSTS, TWO_POSTS.replace("message: two", "message: two #hashtag"))
    assert [p.split(": ", 1)[0] for p in caught.value.problems] == ["jobs.yaml:13"]


def test_warnings_of_an_unchanged_entry_are_given_again_at_its_new_line() -> None:
    with_image = TWO_POSTS + "    image: https://example.org/a.jpg\n"
    old, new = reparse(with_image, with_image.replace("posts:\n", "posts:\n  # a comment\n", 1))
    assert [w.split(": ", 1)[0] for w in old.warnings] == ["jobs.yaml:14"]
    assert [w.split(": ", 1)[0] for w in new.warnings] == ["jobs.yaml:15"]
    assert new.posts[0] is old.posts[0] and new.posts[1] is not old.posts[1]


@pytest.mark.parametrize("depth", [21, 500, 990])
def test_values_nested_too_deep_are_a_located_error_not_a_traceback(depth: int) -> None:
    assert problems(HEAD + "posts: " + "[" * depth + "]" * depth + "\n") == [
        "jobs.yaml:7: values nested more than 20 levels deep"]
