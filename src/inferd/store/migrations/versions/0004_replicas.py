"""replicas: models, replicas and their security rules (the proxy toolkit's tables)

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "llm_models",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(191), nullable=False),
        sa.Column("aliases", sa.JSON, nullable=False),
        sa.Column("fallbacks", sa.JSON, nullable=False),
        sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("source", sa.String(16), nullable=False, server_default="api"),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
        sa.UniqueConstraint("name", name="uq_llm_models_name"),
    )
    op.create_table(
        "replicas",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("model_id", _Id, sa.ForeignKey("llm_models.id", ondelete="CASCADE",
                                                 name="fk_replicas_model_id_llm_models"),
                  nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("url", sa.String(2048), nullable=False),
        sa.Column("upstream_model", sa.String(255), nullable=False, server_default=""),
        sa.Column("weight", sa.Double, nullable=False),
        sa.Column("timeout", sa.Double, nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("options", sa.JSON, nullable=False),
        sa.Column("source", sa.String(16), nullable=False, server_default="api"),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
    )
    op.create_index("ix_replicas_model_id", "replicas", ["model_id"])
    op.create_table(
        "replica_security_rules",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("replica_id", _Id, sa.ForeignKey(
            "replicas.id", ondelete="CASCADE",
            name="fk_replica_security_rules_replica_id_replicas"), nullable=False),
        sa.Column("rule", sa.String(32), nullable=False),
        sa.Column("secret", sa.Text, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
    )
    op.create_index("ix_replica_security_rules_replica_id", "replica_security_rules",
                    ["replica_id"])


def downgrade() -> None:
    op.drop_table("replica_security_rules")
    op.drop_table("replicas")
    op.drop_table("llm_models")
