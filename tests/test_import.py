"""`oyez import posts.csv`: appends to a commented jobs.yaml, or rejects bad rows writing nothing."""

from __future__ import annotations

import difflib
import subprocess
import sys
from pathlib import Path

import pytest

from scheduler import config, importer

JOBS = """\
# Comms team schedule. Keep ids unique.
version: 1
timezone: Europe/London   # UK wall clock

targets:
  page-a:
    adapter: facebook_page
    page_id: "111"
    access_token: ${TOKEN_A}   # from .env
  page-b:
    adapter: facebook_page
    page_id: "222"
    access_token: ${TOKEN_B}

posts:
  # the launch
  - id: launch
    at: 2027-01-12 07:49
    message: "Launch day: see you there."
    targets: [page-a]

  - id: weekly
    cron: "0 9 * * MON"   # Mondays
    message: Safety tip of the week.
    targets: [page-a, page-b]

live_events: []   # none yet
"""


def oyez(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "scheduler", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})


@pytest.fixture
def jobs(tmp_path: Path) -> Path:
    path = tmp_path / "jobs.yaml"
    path.write_text(JOBS)
    return path


def write_csv(path: Path, *rows: str) -> Path:
    """A CSV as Excel saves "CSV UTF-8": BOM, CRLF."""
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(rows).encode() + b"\r\n")
    return path


def test_import_appends_only_the_new_posts_keeping_comments_and_order(tmp_path: Path, jobs: Path) -> None:
    write_csv(tmp_path / "posts.csv",
              "id,at,targets,message,link,image",
              'chat-reminder,14/01/2027 17:00,page-a;page-b,"Live chat at 6pm, bring questions",'
              "https://example.org/chat,",
              'chat-thanks,2027-01-14 19:05,page-b,"Thanks, all.\r\nSee you next time.",,'
              "https://example.org/t.jpg",
              "evening,15/01/2027 6:30 PM,page-a,Évening café post ☕,,",
              ",,,,,")  # an empty row, as spreadsheets leave them
    result = oyez("import", "posts.csv", "-c", "jobs.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "jobs.yaml: appended 3 posts from posts.csv\n"
    after = jobs.read_text()
    diff = [line for line in difflib.ndiff(JOBS.splitlines(), after.splitlines())
            if line.startswith(("- ", "+ ", "? "))]
    assert all(line.startswith("+ ") for line in diff), diff  # only added lines
    added = "\n".join(line[2:] for line in diff)
    assert "  - id: chat-reminder\n    at: 2027-01-14 17:00\n    targets: [page-a, page-b]\n" in added
    assert "    message: |-\n      Thanks, all.\n      See you next time.\n" in added
    assert "    at: 2027-01-15 18:30\n" in added
    assert after.index("id: chat-thanks") < after.index("live_events: []   # none yet")
    cfg = config.parse(after.encode(), env={"TOKEN_A": "t" * 8, "TOKEN_B": "u" * 8})
    posts = {p.id: p for p in cfg.posts}
    assert posts["chat-thanks"].message == "Thanks, all.\nSee you next time."
    assert posts["chat-thanks"].image == "https://example.org/t.jpg"
    assert posts["evening"].message == "Évening café post ☕"
    assert f"{posts['chat-reminder'].at:%Y-%m-%d %H:%M %Z}" == "2027-01-14 17:00 UTC"  # GMT in January


def test_bad_rows_are_reported_by_row_and_nothing_is_written(tmp_path: Path, jobs: Path) -> None:
    csv = write_csv(tmp_path / "posts.csv",
                    "id,at,targets,message",
                    "ok-one,14/01/2027 18:00,page-a,fine",
                    "launch,14/01/2027 18:00,page-a,clashes with an id in jobs.yaml",
                    "nowhere,14/01/2027 18:00,page-z,unknown target",
                    "us-date,01/31/2027 18:00,page-a,month first",
                    "no-text,14/01/2027 18:00,page-a,",
                    "bad id!,14/01/2027 18:00,page-a,hello")
    before = jobs.read_bytes()
    with pytest.raises(config.ConfigError) as caught:
        importer.import_csv(str(csv), str(jobs))
    assert jobs.read_bytes() == before
    problems = caught.value.problems
    assert [p.split(":")[1] for p in problems] == ["3", "4", "5", "6", "7"], problems
    assert problems[0].startswith("posts.csv:3: duplicate id 'launch'")
    assert problems[1] == "posts.csv:4: unknown target 'page-z' (did you mean 'page-b'?)"
    assert "cannot read '01/31/2027 18:00'" in problems[2] and "day first" in problems[2]
    assert problems[3] == "posts.csv:6: empty message"
    assert problems[4].startswith("posts.csv:7: ") and "bad id 'bad id!'" in problems[4]
    result = oyez("import", "posts.csv", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.splitlines() == problems
    assert jobs.read_bytes() == before


def test_unknown_column_and_crlf_jobs_file(tmp_path: Path, jobs: Path) -> None:
    bad = write_csv(tmp_path / "bad.csv", "id,when,message", "x,14/01/2027 18:00,hi")
    with pytest.raises(config.ConfigError) as caught:
        importer.import_csv(str(bad), str(jobs))
    assert caught.value.problems == [
        "bad.csv:1: unknown column 'when' (columns: id, at, targets, message, link, image)",
        "bad.csv:1: missing column 'at'"]
    jobs.write_bytes(JOBS.replace("\n", "\r\n").encode())
    good = write_csv(tmp_path / "good.csv", "id,at,targets,message", "x,14/01/2027 18:00,page-a,hi")
    assert importer.import_csv(str(good), str(jobs)) == 1
    raw = jobs.read_bytes()
    head = JOBS.split("\n\nlive_events")[0].replace("\n", "\r\n")
    assert raw.count(b"\r\n") == raw.count(b"\n")
    assert raw.startswith(f"{head}\r\n  - id: x\r\n".encode())


@pytest.mark.parametrize(("text", "expected"), [
    ("14/01/2027 18:00", "2027-01-14 18:00"),
    ("4/1/2027 09:05", "2027-01-04 09:05"),
    ("14/01/2027 18:00:30", "2027-01-14 18:00:30"),
    ("14/01/2027 6:00 pm", "2027-01-14 18:00"),
    ("2027-01-14 18:00", "2027-01-14 18:00"),
    ("2027-01-14T18:00:00+01:00", "2027-01-14T18:00:00+01:00"),
])
def test_wall_clock_formats(text: str, expected: str) -> None:
    assert importer.wall_clock(text) == expected


@pytest.mark.parametrize("text", ["01/31/2027 18:00", "14/01/2027", "tomorrow", "14.01.2027 18:00"])
def test_wall_clock_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="day first"):
        importer.wall_clock(text)
