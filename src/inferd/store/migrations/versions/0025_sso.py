"""single sign-on: the OpenID Connect identity of a user

Revision ID: 0025
Revises: 0024

``users.sso_issuer`` and ``sso_subject``: the provider (its issuer URL) and the subject
(``sub``) a user signs in as through OpenID Connect (``docs/security/sso.md``); null for users
made by an admin. One user per identity (a unique index on the pair).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("users", sa.Column("sso_issuer", sa.String(255), nullable=True))
    op.add_column("users", sa.Column("sso_subject", sa.String(255), nullable=True))
    op.create_index("ix_users_sso_identity", "users", ["sso_issuer", "sso_subject"],
                    unique=True)


def downgrade() -> None:
    op.drop_index("ix_users_sso_identity", table_name="users")
    op.drop_column("users", "sso_subject")
    op.drop_column("users", "sso_issuer")
