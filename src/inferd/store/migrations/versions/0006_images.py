"""images: a key's images-per-minute limit, and images and steps in usage records

Revision ID: 0006
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("api_keys", sa.Column("ipm", sa.Integer, nullable=True))
    op.add_column("metrics", sa.Column("images", sa.Integer, nullable=True))
    op.add_column("metrics", sa.Column("steps", sa.Integer, nullable=True))


def downgrade() -> None:
    # batch mode: SQLite cannot drop a column in place
    with op.batch_alter_table("metrics") as batch:
        batch.drop_column("steps")
        batch.drop_column("images")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("ipm")
