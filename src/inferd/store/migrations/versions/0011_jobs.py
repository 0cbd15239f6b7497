"""jobs: crash quarantine and rate-limit backoff

Revision ID: 0011
Revises: 0009

``jobs.crashes`` counts the runs of a job that ended with their process (its lease lapsed
while it ran): from the first, the job runs alone in its process ("on probation"), and at
``INFERD_JOB_MAX_CRASHES`` it fails with ``job_quarantined``. ``jobs.deferrals`` counts the
times a job was put back because its key's rate limit was reached, and ``jobs.not_before``
is when it may run again (exponential backoff). The index on (owner, status) counts a key's
unfinished jobs for the per-key caps.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("crashes", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("deferrals", sa.Integer, nullable=False,
                                   server_default="0"))
        batch.add_column(sa.Column("not_before", sa.Double, nullable=True))
    op.create_index("ix_jobs_owner_status", "jobs", ["owner", "status"])


def downgrade() -> None:
    op.drop_index("ix_jobs_owner_status", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("not_before")
        batch.drop_column("deferrals")
        batch.drop_column("crashes")
