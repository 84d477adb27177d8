"""Alembic's environment: always run by `scheduler.migrations` on a connection it holds."""

from __future__ import annotations

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `oyez db upgrade`, not the alembic command")
context.configure(connection=connection, render_as_batch=True)  # SQLite alters tables in batches
with context.begin_transaction():  # inside the caller's transaction (and lock): commits with it
    context.run_migrations()
