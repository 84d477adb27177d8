"""Schema versions: the migrations build the models, and a 0.1.0 ledger upgrades in place."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from conftest import DaemonProcess, iso, soon, targets_yaml
from fakegraph import FakeGraph
from sqlalchemy import text
from sqlmodel import SQLModel

from scheduler import migrations
from scheduler.ledger import Ledger

OLD = Path(__file__).parent / "data" / "ledger-0.1.0.db"  # made by oyez 0.1.0 (see data/README.md)
TABLES = ("delivery", "attempt", "reload", "targethealth")


def dump(path: Path) -> dict[str, list[tuple[object, ...]]]:
    """Every row of 0.1.0's tables, in 0.1.0's columns (later versions add some), as SQLite
    stores them."""
    with sqlite3.connect(OLD) as old:
        columns = {t: ", ".join(c[1] for c in old.execute(f"PRAGMA table_info({t})")) for t in TABLES}
    with sqlite3.connect(path) as conn:
        return {t: conn.execute(f"SELECT {columns[t]} FROM {t} ORDER BY 1").fetchall() for t in TABLES}


def test_the_migrations_build_exactly_the_models(ledger: Ledger) -> None:
    with ledger.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), SQLModel.metadata) == []
        assert migrations.current(conn) == migrations.head()


def test_the_versions_oyez_reads_without_alembic_are_alembics() -> None:
    script = ScriptDirectory.from_config(migrations.config())
    chain = [s.revision for s in reversed(list(script.walk_revisions()))]
    assert chain == migrations.known() and script.get_current_head() == migrations.head()
    assert migrations.known()[0] == migrations.FIRST


def test_a_0_1_0_ledger_upgrades_in_place_keeping_every_row(tmp_path: Path) -> None:
    db = tmp_path / "oyez.db"
    shutil.copy(OLD, db)
    before = dump(db)
    assert {row[9] for row in before["delivery"]} >= {"sent", "failed", "retry", "cancelled", "missed"}
    ledger = Ledger(f"sqlite:///{db}")
    with ledger.engine.connect() as conn:
        assert migrations.current(conn) == migrations.head()
    ledger.engine.dispose()
    assert dump(db) == before
    ledger = Ledger(f"sqlite:///{db}", upgrade=False)  # and the code reads it
    assert {d.status for d in ledger.deliveries(dry_run=False)} == {row[9] for row in before["delivery"]}
    assert len(ledger.attempts(1)) + len(ledger.reloads()) > 0
    ledger.engine.dispose()


def test_the_daemon_runs_on_an_upgraded_ledger_and_resends_nothing(graph: FakeGraph,
                                                                   daemon: DaemonProcess) -> None:
    shutil.copy(OLD, daemon.db_path)
    due = soon(3)
    daemon.write(targets_yaml(graph, "111") + "posts:\n"
                 f"  - id: sent-a\n    at: {iso(due)}\n    message: sent one with link\n"
                 f"  - id: fresh\n    at: {iso(due)}\n    message: new after the upgrade\n")
    daemon.start()
    assert daemon.wait_log("upgraded from schema 0001 to", timeout=30)
    [post] = graph.wait_for_posts(1, timeout=15)
    assert daemon.wait_log("post:sent-a:page111 was already sent; its new time is ignored")
    assert daemon.stop() == 0
    assert post.message == "new after the upgrade" and len(graph.posts) == 1
    statuses = {d.key: d.status for d in daemon.deliveries()}
    assert statuses["post:sent-a:page111"] == "sent" and statuses["post:failed:page111"] == "failed"
    assert statuses["post:fresh:page111"] == "sent"


def test_a_newer_schema_is_refused_in_one_line(tmp_path: Path) -> None:
    db = tmp_path / "oyez.db"
    Ledger(f"sqlite:///{db}").engine.dispose()
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    for command in (["db", "current"], ["history"], ["db", "upgrade"]):
        done = subprocess.run([sys.executable, "-m", "scheduler", *command, "--db", f"sqlite:///{db}"],
                              capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert done.returncode == 1, done
        assert done.stderr.strip().count("\n") == 0 and "Traceback" not in done.stderr
        assert "schema version 9999, newer than this oyez knows" in done.stderr


def test_daemons_starting_together_migrate_once(ledger_url: str, tmp_path: Path) -> None:
    if ledger_url.startswith("sqlite:///"):
        shutil.copy(OLD, ledger_url.removeprefix("sqlite:///"))
    procs = [subprocess.Popen([sys.executable, "-m", "scheduler", "db", "upgrade", "--db", ledger_url],
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    said = [out for out, _ in outs]
    assert sum("upgraded from" in s for s in said) == 1 and sum("already the newest" in s for s in said) == 2
    ledger = Ledger(ledger_url, upgrade=False)
    with ledger.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
    ledger.engine.dispose()


@pytest.mark.parametrize("command", [["history"], ["status"]])
def test_reading_commands_do_not_upgrade_but_say_how(tmp_path: Path, command: list[str]) -> None:
    db = tmp_path / "oyez.db"
    shutil.copy(OLD, db)
    done = subprocess.run([sys.executable, "-m", "scheduler", *command, "--db", f"sqlite:///{db}"],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 1 and "run `oyez db upgrade`" in done.stderr
    assert dump(db) == dump(OLD)
