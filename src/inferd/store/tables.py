"""The whole schema: every table module gathered, so ``metadata`` describes all tables.

Migrations, the schema monitor and tests read ``metadata`` from here. The shared ``MetaData``
and column types live in ``inferd.store.schema``; feature tables in ``tables_*.py``.
"""

from __future__ import annotations

import sqlalchemy as sa

from inferd.store import (
    tables_audit,
    tables_control,
    tables_jobs,
    tables_replicas,
    tables_requests,
    tables_responses,
    tables_storage,
)
from inferd.store.schema import metadata

__all__ = ["kv", "metadata", "tables_audit", "tables_control", "tables_jobs",
           "tables_replicas", "tables_requests", "tables_responses", "tables_storage"]

# Small key/value facts about this installation (instance id, bootstrap state).
kv = sa.Table(
    "kv", metadata,
    sa.Column("key", sa.String(191), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
)
