"""The audit log's table: one row per change of the control plane (``inferd.audit``).

Rows are only ever inserted, and removed past the retention (``AuditStore.prune``); nothing
updates them. ``before`` and ``after`` are the object's views with every secret masked.
"""

from __future__ import annotations

import sqlalchemy as sa

from inferd.store.schema import BigId, metadata

audit_events = sa.Table(
    "audit_events",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("created_at", sa.Double, nullable=False, index=True),
    # who: the key (id, name, scope), later a user or an SSO subject; "cli" / "system" callers
    sa.Column("actor_key_id", sa.String(64), nullable=True, index=True),
    sa.Column("actor_name", sa.String(200), nullable=False, server_default=""),
    sa.Column("actor_scope", sa.String(16), nullable=True),
    sa.Column("actor_user", sa.String(191), nullable=True),
    sa.Column("via", sa.String(16), nullable=False, server_default="api"),  # api|cli|system
    # what, on which object
    sa.Column("action", sa.String(64), nullable=False, index=True),
    sa.Column("object_type", sa.String(32), nullable=False),
    sa.Column("object_id", sa.String(191), nullable=True),
    sa.Column("before", sa.JSON, nullable=True),
    sa.Column("after", sa.JSON, nullable=True),
    # from where
    sa.Column("client_address", sa.String(64), nullable=True),
    sa.Column("request_id", sa.String(64), nullable=True),
    sa.Index("ix_audit_events_object", "object_type", "object_id"),
    sqlite_autoincrement=True,
)
