"""responses: stored Responses API responses

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "responses",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("owner", sa.String(64), nullable=True),
        sa.Column("model", sa.String(191), nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("job_id", sa.String(64), nullable=True),
        sa.Column("history", sa.JSON, nullable=False),
        sa.Column("input_items", sa.JSON, nullable=False),
        sa.Column("response", sa.JSON, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("responses")
