"""prices: a model's price (``llm_models.price``) and the cost of every usage record

Revision ID: 0018
Revises: 0017

``llm_models.price`` holds a model's prices (JSON: ``input``, ``output``, ``cached_input`` per
million tokens, ``image`` per picture); NULL means none. ``metrics.cost`` is a record's cost;
records made before this revision cost 0.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("llm_models", sa.Column("price", sa.JSON, nullable=True))
    op.add_column("metrics", sa.Column("cost", sa.Double, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("metrics") as batch:
        batch.drop_column("cost")
    with op.batch_alter_table("llm_models") as batch:
        batch.drop_column("price")
