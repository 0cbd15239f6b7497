"""SCIM provisioning: the identity provider's id of users and teams, and the users' SCIM names

Revision ID: 0026
Revises: 0025

``users.external_id`` and ``teams.external_id``: the identity provider's own id of a user or
team it provisions over SCIM (``externalId``; unique, null for those it did not provision).
``users.display_name`` and ``users.scim``: the user's ``displayName``, and the other SCIM
attributes inferd keeps as given (``name``, ``emails``). ``users.deprovisioned_at``: when a
SCIM ``DELETE`` took out a user who still holds keys (the user stays, disabled, for those
keys' records, and SCIM no longer sees it).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0026"
down_revision = "0025"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("external_id", sa.String(191), nullable=True))
        batch.add_column(sa.Column("display_name", sa.String(191), nullable=True))
        batch.add_column(sa.Column("scim", sa.JSON, nullable=True))
        batch.add_column(sa.Column("deprovisioned_at", sa.Double, nullable=True))
        batch.create_unique_constraint("uq_users_external_id", ["external_id"])
    with op.batch_alter_table("teams") as batch:
        batch.add_column(sa.Column("external_id", sa.String(191), nullable=True))
        batch.create_unique_constraint("uq_teams_external_id", ["external_id"])


def downgrade() -> None:
    with op.batch_alter_table("teams") as batch:
        batch.drop_constraint("uq_teams_external_id", type_="unique")
        batch.drop_column("external_id")
    with op.batch_alter_table("users") as batch:
        batch.drop_constraint("uq_users_external_id", type_="unique")
        batch.drop_column("deprovisioned_at")
        batch.drop_column("scim")
        batch.drop_column("display_name")
        batch.drop_column("external_id")
