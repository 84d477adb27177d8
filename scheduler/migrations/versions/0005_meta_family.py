"""Deliveries of the Meta family: several images, a parent delivery, steps done, permalink.

- images: every image of a post that has several, one URL per line (image holds the first)
- parent: the key of the delivery this one answers (a first comment, a live-event thread)
- steps: JSON of ids an earlier attempt created on the network (uploaded photos, a
  container), so that a retry reuses them
- permalink: the post's web address as the network gave it

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

COLUMNS = ("images", "parent", "steps", "permalink")


def upgrade() -> None:
    with op.batch_alter_table("delivery") as batch:  # batch: SQLite cannot alter in place
        for name in COLUMNS:
            batch.add_column(sa.Column(name, sa.String(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("delivery") as batch:
        for name in reversed(COLUMNS):
            batch.drop_column(name)
