"""The `oyez` command as a user runs it: exit codes, output, help, no tracebacks."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TOKEN, TOKEN2, targets_yaml
from fakegraph import FakeGraph

from scheduler import cli

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_ENV = {"FB_PAGE_ID": "123", "FB_PAGE_ACCESS_TOKEN": "EAAB-SECRET-CANARY"}


def oyez(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "scheduler", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=60, env={"PATH": "/usr/bin:/bin", **(env or {})})


def test_every_command_has_help_text() -> None:
    parser = cli._parser()
    [sub] = [a for a in parser._actions if a.dest == "command"]
    commands = sub.choices  # type: ignore[attr-defined]
    assert set(commands) == {"validate", "plan", "run", "history", "status", "diff", "check", "db", "web",
                             "export-ics", "alerts", "send", "import"}
    for name, command in commands.items():
        assert command.description, name
        for action in command._actions:
            assert action.help, f"oyez {name} {action.option_strings}"


def test_every_setting_is_in_env_example() -> None:
    example = (ROOT / ".env.example").read_text()
    used = set(re.findall(r"\b((?:OYEZ|FB)_[A-Z_]+)\b", "".join(
        p.read_text() for p in [*ROOT.glob("scheduler/*.py"), *ROOT.glob("adapters/*.py")])))
    assert used and {v for v in used if v not in example} == set()


def test_validate_sample(tmp_path: Path) -> None:
    result = oyez("validate", "-c", str(ROOT / "jobs.yaml"), cwd=tmp_path, env=SAMPLE_ENV)
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r".*jobs\.yaml: OK: 1 target, 2 posts, 1 live event, \d+ occurrences? "
                        r"in the next 30 days\n", result.stdout)


def test_validate_reports_every_problem_located_without_traceback(tmp_path: Path) -> None:
    (tmp_path / "jobs.yaml").write_text("""\
targets:
  p: {adapter: facebook_page, page_id: "1", access_token: "${MISSING_TOKEN}"}
posts:
  - id: a
    at: 2026-13-01 09:00
    message: hi
  - id: a
    at: 2027-01-01 09:00
    message: hi
    colour: blue
""")
    result = oyez("validate", "--strict", cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert lines == sorted(lines, key=lambda line: int(line.split(":")[1]))
    assert any(line.startswith("jobs.yaml:2: environment variable MISSING_TOKEN") for line in lines)
    assert any(line.startswith("jobs.yaml:5: bad time") for line in lines)
    assert any(line.startswith("jobs.yaml:7: duplicate id 'a'") for line in lines)
    assert any(line.startswith("jobs.yaml:10: unknown key 'colour'") for line in lines)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    result = oyez("validate", "-c", "m/nope.yaml", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr == f"m/nope.yaml: cannot read {tmp_path}/m/nope.yaml: No such file or directory\n"


def test_plan_json_lists_occurrences_with_status(tmp_path: Path) -> None:
    result = oyez("plan", "-c", str(ROOT / "jobs.yaml"), "--from", "2027-01-12 00:00",
                  "--until", "2027-01-15 00:00", "--json", cwd=tmp_path, env=SAMPLE_ENV)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [(r["job"], r["part"]) for r in rows] == [
        ("live-chat-announce", "post"), ("hate-crime-live-chat", "reminder-2d"),
        ("hate-crime-live-chat", "reminder-1h"), ("hate-crime-live-chat", "start"),
        ("hate-crime-live-chat", "end"),
    ]
    start = rows[3]
    assert (start["local"], start["utc"]) == ("2027-01-14T18:00:00+00:00", "2027-01-14T18:00:00+00:00")
    assert rows[1]["text"].startswith("Facebook live chat on hate crime: Thursday 6pm.")
    assert {r["status"] for r in rows} == {"not yet in ledger"}
    assert not (tmp_path / "oyez.db").exists()  # looking does not create a database
    assert "EAAB-SECRET-CANARY" not in result.stdout + result.stderr


def test_history_and_status_on_an_empty_directory(tmp_path: Path) -> None:
    assert oyez("history", cwd=tmp_path).stdout.strip() == "the ledger is empty"
    assert "has not run here yet" in oyez("status", cwd=tmp_path).stdout


@pytest.mark.parametrize("argv", [["run", "-c", "missing.yaml"], ["plan", "--from", "tomorrow"]])
def test_bad_input_exits_1_without_traceback(tmp_path: Path, argv: list[str]) -> None:
    (tmp_path / "jobs.yaml").write_text((ROOT / "jobs.yaml").read_text())
    result = oyez(*argv, cwd=tmp_path, env=SAMPLE_ENV)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and result.stderr.strip()


def test_check_prints_a_table_of_token_states(tmp_path: Path, graph: FakeGraph) -> None:
    graph.add_page("333", "EAAB-TOKEN-333")
    graph.add_page("444", "EAAB-TOKEN-444")
    graph.set_token("222", "EAAB-ROTATED")
    graph.set_token_info("333", expires_at=int(time.time() + 3 * 86400 + 600))
    graph.set_token_info("444", scopes=("pages_show_list", "pages_read_engagement"))
    graph.set_app("42", "APP-SECRET-CANARY")
    (tmp_path / "jobs.yaml").write_text(targets_yaml(graph, "111", "222", "333", "444") + "posts: []\n")
    env = {"TOKEN_111": TOKEN, "TOKEN_222": TOKEN2, "TOKEN_333": "EAAB-TOKEN-333",
           "TOKEN_444": "EAAB-TOKEN-444", "FB_APP_ID": "42", "FB_APP_SECRET": "APP-SECRET-CANARY"}
    result = oyez("check", cwd=tmp_path, env=env)
    assert result.returncode == 1, result.stderr
    rows = [re.split(r"\s{2,}", line, maxsplit=2) for line in result.stdout.splitlines()]
    assert [r[:2] for r in rows] == [["target", "token"], ["page111", "ok"], ["page222", "invalid"],
                                     ["page333", "expires in 4 days"],
                                     ["page444", "missing scope pages_manage_posts"]]
    assert rows[1][2] == "Fake Page 111; never expires"
    assert "Fix: issue a new Page access token" in rows[2][2] and "Graph error 190/460" in rows[2][2]
    assert "Fix: grant the app pages_manage_posts" in rows[4][2]
    debug = [r for r in graph.received if r.path.endswith("/debug_token")]
    assert len(debug) == 3 and {r.token for r in debug} == {"42|APP-SECRET-CANARY"}  # 222 failed at /me
    assert not any(r.token_in_url for r in graph.received)
    for secret in (TOKEN, TOKEN2, "APP-SECRET-CANARY"):
        assert secret not in result.stdout + result.stderr


def test_check_without_an_app_asks_debug_token_with_the_page_token(tmp_path: Path,
                                                                  graph: FakeGraph) -> None:
    (tmp_path / "jobs.yaml").write_text(targets_yaml(graph, "111") + "posts: []\n")
    result = oyez("check", cwd=tmp_path, env={"TOKEN_111": TOKEN})
    assert result.returncode == 0, result.stdout + result.stderr
    [debug] = [r for r in graph.received if r.path.endswith("/debug_token")]
    assert debug.token == TOKEN and debug.query == {"input_token": TOKEN}


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    first_screen = "\n".join(readme.splitlines()[:15])
    assert "\n    scripts/test\n" in first_screen
    assert "oyez run --dry-run" in first_screen
    assert (ROOT / ".ci" / "run").read_text().strip().endswith("exec scripts/test")
