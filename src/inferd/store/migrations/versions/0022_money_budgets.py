"""money budgets: keys, users and teams get a budget in money beside their token budget

Revision ID: 0022
Revises: 0021

``max_budget`` (in the price book's currency units, per ``budget_period``, null: none) and
``budget_alert`` (the percentage of it at which a warning is logged once per period, null: 80)
on ``api_keys``, ``users`` and ``teams``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None

TABLES = ("api_keys", "users", "teams")


def upgrade() -> None:
    for table in TABLES:
        op.add_column(table, sa.Column("max_budget", sa.Double, nullable=True))
        op.add_column(table, sa.Column("budget_alert", sa.Integer, nullable=True))


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("budget_alert")
            batch.drop_column("max_budget")
