"""The ledger's schema versions (Alembic), and upgrading a database in place.

`upgrade(engine)` brings a database to the newest version this oyez knows,
under a lock (PostgreSQL: an advisory lock; SQLite: its write lock), so that
daemons starting together migrate it once. A database made by oyez 0.1.0,
before versions were recorded, is recognised and stamped as version 0001
first. A database newer than this code is refused, never half-used.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, inspect, text

from ..errors import OyezError

if TYPE_CHECKING:  # Alembic is imported only to migrate: looking at the version is plain SQL
    from alembic.config import Config

FIRST = "0001"  # the schema of oyez 0.1.0, which recorded no version
LOCK_KEY = 0x6F79657A  # "oyez": the PostgreSQL advisory lock held while migrating


def config(conn: Connection | None = None) -> Config:
    """Alembic's configuration for our migrations, to run on `conn`."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent))
    cfg.attributes["connection"] = conn
    return cfg


def known() -> list[str]:
    """Every schema version this oyez knows, oldest first.

    Versions form one line and each is named by its file's four-digit prefix
    (versions/0002_daemon.py is revision "0002", revising "0001"), so this
    needs no Alembic; a test holds Alembic's own view to it.
    """
    return sorted(p.name[:4] for p in (Path(__file__).parent / "versions").glob("[0-9][0-9][0-9][0-9]_*.py"))


def head() -> str:
    """The newest schema version this oyez knows."""
    return known()[-1]


def current(conn: Connection) -> str | None:
    """The schema version of the database: None if it has no ledger yet, FIRST for 0.1.0's."""
    tables = inspect(conn)
    if tables.has_table("alembic_version"):
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    return FIRST if tables.has_table("delivery") else None


def check(conn: Connection, where: str) -> str | None:
    """The database's version; raise OyezError if it is newer than this code knows."""
    version = current(conn)
    if version is not None and version not in known():
        raise OyezError(f"the ledger {where} has schema version {version}, newer than this oyez "
                        f"knows (up to {head()}): upgrade oyez, or point it at another database")
    return version


def upgrade(engine: Engine, where: str) -> tuple[str | None, str]:
    """Bring the database to `head()` under a lock; return (version before, version after)."""
    write = engine.execution_options(oyez_write=True)  # SQLite: BEGIN IMMEDIATE, the write lock
    with write.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
        before = check(conn, where)  # read under the lock: another daemon may have just migrated
        if before != head():
            from alembic import command

            cfg = config(conn)
            if before == FIRST and not inspect(conn).has_table("alembic_version"):
                command.stamp(cfg, FIRST)
            command.upgrade(cfg, "head")
    return before, head()
