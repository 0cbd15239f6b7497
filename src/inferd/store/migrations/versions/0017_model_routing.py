"""model routing: how a model's replicas are chosen (``prefix``, ``least_busy``, ``weighted``)

Revision ID: 0017
Revises: 0016

``llm_models.routing`` holds a model's routing; NULL (every model before this revision) means
the server's default.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("llm_models", sa.Column("routing", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("llm_models") as batch:
        batch.drop_column("routing")
