"""secrets: room for encrypted webhook secrets in api_keys

Revision ID: 0008
Revises: 0007

``api_keys.webhook_secret`` holds ``fernet:<token>`` when ``INFERD_SECRET_KEY`` is set (about
170 characters for a 50-character secret). SQLite does not enforce a VARCHAR length, so only
the other databases change.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.alter_column("api_keys", "webhook_secret", type_=sa.String(512),
                        existing_type=sa.String(128), existing_nullable=False)


def downgrade() -> None:
    # encrypted values do not fit the old width: run without INFERD_SECRET_KEY first
    if op.get_bind().dialect.name != "sqlite":
        op.alter_column("api_keys", "webhook_secret", type_=sa.String(128),
                        existing_type=sa.String(512), existing_nullable=False)
