"""jobs: jobs, job events, webhook attempts, files, batches, the contexts-and-results API's contexts

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_LongText = sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")
TABLES = ("s0_contexts", "batches", "file_parts", "files", "webhook_attempts", "job_events",
          "jobs")


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("owner", sa.String(64), nullable=True),  # API key id; NULL when keys are off
        sa.Column("owner_scope", sa.String(16), nullable=False, server_default="admin"),
        sa.Column("source", sa.String(16), nullable=False, server_default="api"),
        sa.Column("endpoint", sa.String(64), nullable=False),
        sa.Column("model", sa.String(191), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("priority", sa.Integer, nullable=False, server_default="0"),
        sa.Column("request", sa.JSON, nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("idempotency_scope", sa.String(64), nullable=True, unique=True),
        sa.Column("result", sa.JSON, nullable=True),
        sa.Column("error", sa.JSON, nullable=True),
        sa.Column("status_code", sa.Integer, nullable=True),
        sa.Column("usage", sa.JSON, nullable=True),
        sa.Column("meta", sa.JSON, nullable=True),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("started_at", sa.Double, nullable=True),
        sa.Column("finished_at", sa.Double, nullable=True),
        sa.Column("deadline_at", sa.Double, nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("claimed_by", sa.String(64), nullable=True),
        sa.Column("lease_expires_at", sa.Double, nullable=True),
        sa.Column("webhook_url", sa.Text, nullable=True),
        sa.Column("webhook_state", sa.String(16), nullable=True),  # pending | delivered | failed
        sa.Column("batch_id", sa.String(64), nullable=True),
        sa.Column("batch_index", sa.Integer, nullable=True),
        sa.Column("custom_id", sa.String(191), nullable=True),
        sa.Index("ix_jobs_status_model", "status", "model", "priority"),
        sa.Index("ix_jobs_owner_id", "owner", "id"),
        sa.Index("ix_jobs_batch", "batch_id", "batch_index"),
        sa.Index("ix_jobs_finished", "finished_at"),
    )

    # Progress and token events of a job, in order; the SSE stream replays them by ``seq``.
    op.create_table(
        "job_events",
        sa.Column("job_id", sa.String(64), primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("data", _LongText, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
    )

    op.create_table(
        "webhook_attempts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(64), nullable=False, index=True),
        sa.Column("webhook_id", sa.String(64), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("status_code", sa.Integer, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("created_at", sa.Double, nullable=False),
    )

    op.create_table(
        "files",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("owner", sa.String(64), nullable=True),
        sa.Column("purpose", sa.String(32), nullable=False),
        sa.Column("filename", sa.String(255), nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("lines", sa.Integer, nullable=True),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("expires_at", sa.Double, nullable=True),
        sa.Index("ix_files_owner_id", "owner", "id"),
    )

    op.create_table(
        "file_parts",
        sa.Column("file_id", sa.String(64), primary_key=True),
        sa.Column("part", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("data", _LongText, nullable=False),  # base64
    )

    op.create_table(
        "batches",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("owner", sa.String(64), nullable=True),
        sa.Column("endpoint", sa.String(64), nullable=False),
        sa.Column("input_file_id", sa.String(64), nullable=False),
        sa.Column("completion_window", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("total", sa.Integer, nullable=False),
        sa.Column("output_file_id", sa.String(64), nullable=True),
        sa.Column("error_file_id", sa.String(64), nullable=True),
        sa.Column("meta", sa.JSON, nullable=True),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("in_progress_at", sa.Double, nullable=True),
        sa.Column("expires_at", sa.Double, nullable=True),
        sa.Column("finalizing_at", sa.Double, nullable=True),
        sa.Column("completed_at", sa.Double, nullable=True),
        sa.Column("cancelling_at", sa.Double, nullable=True),
        sa.Column("cancelled_at", sa.Double, nullable=True),
        sa.Index("ix_batches_owner_id", "owner", "id"),
        sa.Index("ix_batches_status", "status"),
    )

    # The contexts-and-results API's prompts ("contexts"); its results are jobs with source "s0".
    op.create_table(
        "s0_contexts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("owner", sa.String(64), nullable=True),
        sa.Column("content", _LongText, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
    )


def downgrade() -> None:
    for name in TABLES:
        op.drop_table(name)
