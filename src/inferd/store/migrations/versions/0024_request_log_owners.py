"""request log owners: the user and team of each request's key

Revision ID: 0024
Revises: 0023

``request_log.user_id`` and ``team_id``: the key's user and team when the request was made
(null for a key of neither, a request without a key, and every record written before). On
PostgreSQL added to the partitioned table, so to every partition. The index on
``(team_id, created_at)`` serves a team's page, newest first (on PostgreSQL created on the
parent: each partition gets its own).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.add_column("request_log", sa.Column("user_id", BigId, nullable=True))
    op.add_column("request_log", sa.Column("team_id", BigId, nullable=True))
    op.create_index("ix_request_log_team_id", "request_log", ["team_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_request_log_team_id", table_name="request_log")
    op.drop_column("request_log", "team_id")
    op.drop_column("request_log", "user_id")
