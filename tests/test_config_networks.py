"""jobs.yaml for Mastodon, Bluesky and webhook targets: settings, per-post options, lengths."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from scheduler import config, plan
from scheduler.errors import ConfigError

ENV = {"MASTO": "masto-token", "BSKY": "bsky-pass", "HOOK": "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3"}
TARGETS = """timezone: UTC
targets:
  masto:
    adapter: mastodon
    instance_url: https://social.example.org
    access_token: ${MASTO}
  sky:
    adapter: bluesky
    handle: police.example.org
    app_password: ${BSKY}
  hook:
    adapter: webhook
    url: https://intranet.example.org/hooks/oyez
    secret: ${HOOK}
"""  # lines 1-14


def parse(posts: str) -> config.Config:
    return config.parse((TARGETS + posts).encode(), env=ENV)


def problems(posts: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(posts)
    return caught.value.problems


def test_options_travel_to_the_occurrence() -> None:
    cfg = parse("""posts:
  - id: closure
    at: 2030-01-01 09:00
    message: Bridge closed
    image: https://example.org/bridge.jpg
    alt: The bridge, fenced off
    visibility: unlisted
    spoiler_text: Road closure
    targets: [masto, sky, hook]
""")
    assert cfg.warnings == ()
    occurrences = plan.expand(cfg, datetime(2029, 1, 1, tzinfo=UTC), datetime(2031, 1, 1, tzinfo=UTC))
    assert {json.dumps(json.loads(o.options or "{}"), sort_keys=True) for o in occurrences} == {
        json.dumps({"alt": "The bridge, fenced off", "spoiler_text": "Road closure",
                    "visibility": "unlisted"}, sort_keys=True)}


def test_image_without_alt_is_a_warning_with_its_line() -> None:
    cfg = parse("posts:\n  - id: a\n    at: 2030-01-01 09:00\n    message: hi\n"
                "    image: https://example.org/a.jpg\n    targets: [sky]\n")
    assert len(cfg.warnings) == 1 and cfg.warnings[0].startswith("jobs.yaml:19: image without alt")


@pytest.mark.parametrize(("target", "text", "expected"), [
    ("sky", "x" * 301, "jobs.yaml:18: target sky: 301 graphemes (301 bytes)"),
    ("sky", "é" * 300, None),
    ("masto", "x" * 501, "jobs.yaml:18: target masto: 501 characters, Mastodon allows 500"),
    ("hook", "x" * 5000, None),
])
def test_lengths_checked_per_target(target: str, text: str, expected: str | None) -> None:
    posts = f"posts:\n  - id: a\n    at: 2030-01-01 09:00\n    message: {text}\n    targets: [{target}]\n"
    if expected is None:
        parse(posts)
    else:
        [problem] = problems(posts)
        assert problem.startswith(expected)


def test_live_event_text_is_checked_after_rendering() -> None:
    [problem] = problems("""live_events:
  - id: chat
    title: """ + "t" * 295 + """
    starts: 2030-01-02 18:00
    ends: 2030-01-02 19:00
    targets: [sky]
    on_start: "Live: {title}"
""")
    assert problem.startswith("jobs.yaml:21: target sky: 301 graphemes")


@pytest.mark.parametrize(("extra", "expected"), [
    ("    visibility: everyone\n", "visibility: Input should be 'public', 'unlisted', 'private' or 'direct'"),
])
def test_bad_options(extra: str, expected: str) -> None:
    [problem] = problems("posts:\n  - id: a\n    at: 2030-01-01 09:00\n    message: hi\n"
                         f"    targets: [masto]\n{extra}")
    assert problem.startswith("jobs.yaml:20: ") and expected in problem


@pytest.mark.parametrize(("setting", "value", "expected"), [
    ("instance_url", "http://social.example.org", "instance_url must be https"),
    ("secret", "not-base64-!!", "secret must be whsec_"),
])
def test_bad_settings_are_located_and_hide_secrets(setting: str, value: str, expected: str) -> None:
    # a secret is always a ${VAR} (inline ones are refused): the bad value comes from the environment
    text = TARGETS.replace("https://social.example.org", value) if setting == "instance_url" else TARGETS
    env = ENV if setting == "instance_url" else {**ENV, "HOOK": value}
    with pytest.raises(ConfigError) as caught:
        config.parse((text + "posts: []\n").encode(), env=env)
    [problem] = caught.value.problems
    assert expected in problem and "masto-token" not in problem


def test_a_dry_run_without_the_secrets_still_reads_the_file() -> None:
    cfg = config.parse((TARGETS + "posts: []\n").encode(), env={}, strict_env=False)
    assert len(cfg.warnings) == 3 and "HOOK is not set" in cfg.warnings[2]
