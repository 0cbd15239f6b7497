"""audit: the audit log of the control plane

Revision ID: 0015
Revises: 0013

``audit_events``: one row per change of keys, models, replicas, prompts, engines, secrets and
per UI log-in; refused keys counted per client address and window (``inferd.audit``).
Rows are inserted and pruned past the retention, never updated.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "audit_events",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("actor_key_id", sa.String(64), nullable=True),
        sa.Column("actor_name", sa.String(200), nullable=False, server_default=""),
        sa.Column("actor_scope", sa.String(16), nullable=True),
        sa.Column("actor_user", sa.String(191), nullable=True),
        sa.Column("via", sa.String(16), nullable=False, server_default="api"),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("object_type", sa.String(32), nullable=False),
        sa.Column("object_id", sa.String(191), nullable=True),
        sa.Column("before", sa.JSON, nullable=True),
        sa.Column("after", sa.JSON, nullable=True),
        sa.Column("client_address", sa.String(64), nullable=True),
        sa.Column("request_id", sa.String(64), nullable=True),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_audit_events_created_at", "audit_events", ["created_at"])
    op.create_index("ix_audit_events_actor_key_id", "audit_events", ["actor_key_id"])
    op.create_index("ix_audit_events_action", "audit_events", ["action"])
    op.create_index("ix_audit_events_object", "audit_events", ["object_type", "object_id"])


def downgrade() -> None:
    op.drop_table("audit_events")
