"""spool marks: the last record number written per spool file of a batched writer

Revision ID: 0014
Revises: 0013

A batched writer (``inferd.batchwriter``: the usage recorder) spools the records it accepts to
a local file before writing them, and stores, in the transaction of each batch, the last record
number written for that file: a spool replayed after a crash resumes after it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "spool_marks",
        sa.Column("spool", sa.String(32), primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("spool_marks")
