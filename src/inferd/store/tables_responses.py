"""The Responses API's stored responses (``store: true``).

A row holds what a later request needs: the conversation items up to and including this
request's input (so ``previous_response_id`` reads one row), the input items alone (for
``/input_items``), and the finished Response object. A background response has no object until
its job finishes: its state and output are the job's (``job_id``), so every gateway sharing the
database sees the same answer.
"""

from __future__ import annotations

import sqlalchemy as sa

from inferd.store.schema import metadata

responses = sa.Table(
    "responses", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("owner", sa.String(64), nullable=True),  # API key id; NULL when keys are off
    sa.Column("model", sa.String(191), nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("job_id", sa.String(64), nullable=True),  # background responses only
    sa.Column("history", sa.JSON, nullable=False),
    sa.Column("input_items", sa.JSON, nullable=False),
    sa.Column("response", sa.JSON, nullable=True),
)
