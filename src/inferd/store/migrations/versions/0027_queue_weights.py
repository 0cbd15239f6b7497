"""queue weights: a key's and a team's weight in the gateway's fair queueing

Revision ID: 0027
Revises: 0026

``api_keys.queue_weight`` and ``teams.queue_weight`` (null: the settings' ``queue_weights``
by key id or name, else 1): while a model's replicas are at capacity the gateway's queue
shares turns between teams by their weight, then between a team's keys by theirs
(``inferd.routing.fairqueue``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0027"
down_revision = "0026"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("api_keys", sa.Column("queue_weight", sa.Double, nullable=True))
    op.add_column("teams", sa.Column("queue_weight", sa.Double, nullable=True))


def downgrade() -> None:
    op.drop_column("teams", "queue_weight")
    op.drop_column("api_keys", "queue_weight")
