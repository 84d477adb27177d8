"""`oyez validate` on hostile input: never a traceback, exit 0 or 1, every problem located."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler.cli import main

SAMPLE = (Path(__file__).resolve().parent.parent / "jobs.yaml").read_bytes()
ON_START = b'on_start: "We\'re live now: {title}. Post your questions below."'
LOCATED = re.compile(r"^\S*jobs\.yaml:\d+: ")  # the path as given, then the line
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


class Validate:
    """Runs `oyez validate -c jobs.yaml` in-process in a temp dir and captures what it prints."""

    def __init__(self, workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.jobs = workdir / "jobs.yaml"
        self.capsys = capsys

    def __call__(self, text: bytes) -> tuple[int, str, str]:
        self.jobs.write_bytes(text)
        self.capsys.readouterr()
        code = main(["validate", "-c", str(self.jobs)])
        out, err = self.capsys.readouterr()
        return code, out, err


@pytest.fixture
def validate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Iterator[Validate]:
    monkeypatch.chdir(tmp_path)  # main() loads .env from the working directory
    monkeypatch.setenv("FB_PAGE_ID", "1234567890")
    monkeypatch.setenv("FB_PAGE_ACCESS_TOKEN", "EAAB-SECRET-CANARY")
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield Validate(tmp_path, capsys)
    root.handlers[:] = handlers  # main() replaced them with its own
    root.setLevel(level)


def assert_well_behaved(code: int, out: str, err: str, jobs: Path) -> None:
    assert code in (0, 1)
    if code == 0:
        assert out.startswith(f"{jobs}: OK: "), out
    else:
        assert err, "exit 1 without a problem"
        bad = [line for line in err.splitlines() if not LOCATED.match(line)]
        assert not bad, err


# --- inputs -----------------------------------------------------------------------------------

def _delete(text: bytes, at: int, size: int) -> bytes:
    return text[:at] + text[at + size:]


def _delete_line(text: bytes, at: int, _: int) -> bytes:
    lines = text.splitlines(keepends=True)
    return b"".join(lines[:at % len(lines)] + lines[at % len(lines) + 1:]) if lines else text


def _truncate(text: bytes, at: int, _: int) -> bytes:
    return text[:at]


MUTATIONS = {"delete": _delete, "delete_line": _delete_line, "truncate": _truncate}


@st.composite
def mutated_sample(draw: st.DrawFn) -> bytes:
    """The sample jobs.yaml after 1-3 random deletions, insertions, truncations or replacements."""
    text = SAMPLE
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, max(len(text) - 1, 0)))
        kind = draw(st.sampled_from(["insert", "replace", *MUTATIONS]))
        if kind in ("insert", "replace"):
            # short runs only (huge template padding widths are covered in test_config.py)
            new = draw(st.text(max_size=8)).encode()
            text = text[:at] + new + text[at + (1 if kind == "replace" else 0):]
        else:
            text = MUTATIONS[kind](text, at, draw(st.integers(1, 40)))
    return text


# Digits are left out: huge padding widths like {title:>2000000000} are covered in test_config.py.
TEMPLATE_PIECES = st.sampled_from([
    "{", "}", "{{", "}}", "title", "starts", "ends", "id", "link", "nope", ":", "!r", "!s", "!a",
    ".", "__class__", "[", "]", "__globals__", "%-I%p", "%H:%M", "%", ">", "^", "x", "s", "d", ",",
    " ", "\n", "\t", "\\", '"', "'", "$", "${FB_PAGE_ACCESS_TOKEN}",
])
TEMPLATE_TEXT = st.text(st.characters(exclude_categories=["Cc", "Cs", "Nd"]), max_size=4)


@st.composite
def random_template(draw: st.DrawFn) -> bytes:
    """The sample with a random template as the live event's on_start message."""
    template = "".join(draw(st.lists(st.one_of(TEMPLATE_PIECES, TEMPLATE_TEXT), max_size=12)))
    line = b"on_start: " + json.dumps(template, ensure_ascii=False).encode()
    return SAMPLE.replace(ON_START, line)


JOBS_FILES = st.one_of(mutated_sample(), random_template())


# --- properties -------------------------------------------------------------------------------

def test_sample_validates(validate: Validate) -> None:
    code, out, err = validate(SAMPLE)
    assert (code, err) == (0, "")
    assert out.startswith(f"{validate.jobs}: OK: 1 target, 2 posts, 1 live event, ")


@FUZZ
@given(text=JOBS_FILES)
def test_validate_never_crashes(validate: Validate, text: bytes) -> None:
    code, out, err = validate(text)
    assert code in (0, 1)
    assert "Traceback" not in out + err
    if code == 1:
        assert LOCATED.match(err), err


@settings(FUZZ, derandomize=True)
@given(text=JOBS_FILES)
def test_validate_prints_only_located_problems(validate: Validate, text: bytes) -> None:
    assert_well_behaved(*validate(text), validate.jobs)


@pytest.mark.parametrize(("old", "new"), [
    pytest.param("version: 1", "version: 1\n# \udcff", id="non-utf8"),
    pytest.param("version: 1", "version: 1\nx: " + "[" * 5000 + "]" * 5000, id="deep-nesting"),
    pytest.param("version: 1", "\ufeffversion: 1", id="byte-order-mark"),
    pytest.param("    until: 2027-03-31", "    until: 2027-03-31\n    grace: 9999999999999w",
                 id="huge-grace"),
    pytest.param("before: 2d", "before: 900000000d", id="reminder-before-year-1"),
    pytest.param("at: 2027-01-12 07:49", "at: 0001-01-01T00:00+05:00", id="at-before-year-1"),
    pytest.param("until: 2027-03-31", "until: 9999-12-31", id="until-last-day"),
    pytest.param("ends: 2027-01-14 19:00", "ends: 9999-12-31 23:59", id="ends-last-minute"),
    pytest.param("hate crime\n", "hate crime \x07\n", id="control-character"),
    pytest.param("{title} starts in one hour.", "{ti\\ntle} starts", id="newline-in-template-field"),
    pytest.param("police-page:", '"police\\npage":', id="newline-in-target-name"),
    pytest.param("ends: 2027-01-14 19:00", "ends: |\n      2027-01-14 17:00", id="newline-in-ends"),
])
def test_hostile_values(validate: Validate, old: str, new: str) -> None:
    text = SAMPLE.decode()
    assert old in text
    mutated = text.replace(old, new, 1).encode("utf-8", "surrogateescape")
    code, out, err = validate(mutated)
    assert code == 1, out + err
    assert_well_behaved(code, out, err, validate.jobs)
