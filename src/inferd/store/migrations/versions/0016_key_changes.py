"""key changes: a feed of changed keys for incremental refreshes; indexes for key lists

Revision ID: 0016
Revises: 0015

Every key change (create, update, delete) appends the key's id and hash to
``api_key_changes`` in its own transaction; gateways read the rows after the last one they saw
instead of reloading every key (``inferd.auth.keys.KeyRing``). Rows older than a few minutes
are pruned by the writers. ``api_keys`` gets indexes on ``team`` (lists filtered by team) and
``scope`` (the admin-key checks of every change).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "api_key_changes",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("key_id", sa.BigInteger, nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("changed_at", sa.Double, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_api_key_changes_changed_at", "api_key_changes", ["changed_at"])
    op.create_index("ix_api_keys_team", "api_keys", ["team"])
    op.create_index("ix_api_keys_scope", "api_keys", ["scope"])


def downgrade() -> None:
    op.drop_index("ix_api_keys_scope", table_name="api_keys")
    op.drop_index("ix_api_keys_team", table_name="api_keys")
    op.drop_index("ix_api_key_changes_changed_at", table_name="api_key_changes")
    op.drop_table("api_key_changes")
