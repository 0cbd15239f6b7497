"""Tables of the control plane: API keys, teams and users, and usage records.

``api_keys`` keeps only a SHA-256 hash of each key (plus a short display prefix); ids are integers
because the proxy toolkit's routes (``/delete_api_key``) address keys by an integer id. They are
never reused (``AUTOINCREMENT`` on SQLite, sequences elsewhere): other tables name a key's objects
by its id, so a new key must never take the id of a deleted one.
``metrics`` is the usage record of every inference request (the proxy toolkit's name for the
table); it is written in batches by ``inferd.usage.UsageRecorder``, never once per request.
``spool_marks`` keeps, per spool file of a batched writer (``inferd.batchwriter``), the last
record number written, in the transaction of the records: a spool replayed after a crash
resumes after it, so no record is written twice.
"""

from __future__ import annotations

import sqlalchemy as sa

from inferd.store.schema import BigId, metadata

api_keys = sa.Table(
    "api_keys", metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(200), nullable=False, server_default=""),
    sa.Column("owner", sa.String(191), nullable=True, index=True),
    sa.Column("team", sa.String(191), nullable=True, index=True),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("prefix", sa.String(32), nullable=False),
    sa.Column("scope", sa.String(16), nullable=False, index=True),
    sa.Column("models", sa.JSON, nullable=True),  # null: every model
    sa.Column("rpm", sa.Integer, nullable=True),
    sa.Column("tpm", sa.Integer, nullable=True),
    sa.Column("ipm", sa.Integer, nullable=True),  # images per minute
    # image cost units (steps x megapixels x pictures) per minute and per budget period
    sa.Column("upm", sa.Integer, nullable=True),
    sa.Column("image_budget", sa.BigInteger, nullable=True),
    # storage quota (null: the settings' default)
    sa.Column("storage_bytes", sa.BigInteger, nullable=True),
    sa.Column("storage_objects", sa.Integer, nullable=True),
    sa.Column("token_budget", sa.BigInteger, nullable=True),
    sa.Column("budget_period", sa.String(16), nullable=True),  # null: total; day|week|month
    # money budget (price book currency units) per budget period, and its alert percentage
    sa.Column("max_budget", sa.Double, nullable=True),
    sa.Column("budget_alert", sa.Integer, nullable=True),
    sa.Column("expires_at", sa.Double, nullable=True),
    sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("webhook_secret", sa.String(512), nullable=False),  # encrypted: secretbox
    sa.Column("extra", sa.JSON, nullable=True),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
    # The team and the user the key belongs to (``teams``, ``users``; null: none). The store
    # checks that they exist and refuses to delete a team or user that still has keys.
    sa.Column("team_id", sa.BigInteger, nullable=True, index=True),
    sa.Column("user_id", sa.BigInteger, nullable=True, index=True),
    # the request log keeps this key's request and answer bodies (``inferd.reqlog``)
    sa.Column("log_bodies", sa.Boolean, nullable=False, server_default=sa.false()),
    # its weight among its team's keys in the gateway's fair queueing (null: the settings'
    # ``queue_weights``, else 1)
    sa.Column("queue_weight", sa.Double, nullable=True),
    sqlite_autoincrement=True,
)

# Teams and users: keys belong to them, and their limits apply across all their keys
# (``inferd.store.teams``). Names are unique.
teams = sa.Table(
    "teams", metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(191), nullable=False, unique=True),
    sa.Column("models", sa.JSON, nullable=True),  # null: every model
    sa.Column("rpm", sa.Integer, nullable=True),
    sa.Column("tpm", sa.Integer, nullable=True),
    sa.Column("token_budget", sa.BigInteger, nullable=True),
    sa.Column("budget_period", sa.String(16), nullable=True),
    # money budget (price book currency units) per budget period, and its alert percentage
    sa.Column("max_budget", sa.Double, nullable=True),
    sa.Column("budget_alert", sa.Integer, nullable=True),
    sa.Column("extra", sa.JSON, nullable=True),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
    # the identity provider's id of a team it provisions over SCIM (``inferd.auth.scim``)
    sa.Column("external_id", sa.String(191), nullable=True, unique=True),
    # its weight among teams in the gateway's fair queueing (null: 1)
    sa.Column("queue_weight", sa.Double, nullable=True),
    sqlite_autoincrement=True,
)

users = sa.Table(
    "users", metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(191), nullable=False, unique=True),
    sa.Column("email", sa.String(320), nullable=True),
    sa.Column("role", sa.String(16), nullable=True),  # admin | auditor | null: none
    sa.Column("disabled", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("rpm", sa.Integer, nullable=True),
    sa.Column("tpm", sa.Integer, nullable=True),
    sa.Column("token_budget", sa.BigInteger, nullable=True),
    sa.Column("budget_period", sa.String(16), nullable=True),
    # money budget (price book currency units) per budget period, and its alert percentage
    sa.Column("max_budget", sa.Double, nullable=True),
    sa.Column("budget_alert", sa.Integer, nullable=True),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
    # the OpenID Connect identity the user signs in as (``inferd.auth.sso``); null: none
    sa.Column("sso_issuer", sa.String(255), nullable=True),
    sa.Column("sso_subject", sa.String(255), nullable=True),
    # SCIM provisioning (``inferd.auth.scim``): the identity provider's id of the user, its
    # ``displayName``, the other SCIM attributes kept as given (``name``, ``emails``), and
    # when a SCIM ``DELETE`` took out a user who still holds keys (SCIM no longer sees it)
    sa.Column("external_id", sa.String(191), nullable=True, unique=True),
    sa.Column("display_name", sa.String(191), nullable=True),
    sa.Column("scim", sa.JSON, nullable=True),
    sa.Column("deprovisioned_at", sa.Double, nullable=True),
    sa.Index("ix_users_sso_identity", "sso_issuer", "sso_subject", unique=True),
    sqlite_autoincrement=True,
)

team_members = sa.Table(
    "team_members", metadata,
    sa.Column("team_id", BigId, sa.ForeignKey("teams.id", ondelete="CASCADE"),
              primary_key=True),
    sa.Column("user_id", BigId, sa.ForeignKey("users.id", ondelete="CASCADE"),
              primary_key=True, index=True),
    sa.Column("role", sa.String(16), nullable=False),  # owner | member | viewer
    sa.Column("created_at", sa.Double, nullable=False),
)

# One row per key change (its own transaction's), read by gateways after the last one they saw
# (``inferd.store.keys.KeyStore.changes_since``); pruned after ``CHANGE_RETENTION_SECONDS``.
api_key_changes = sa.Table(
    "api_key_changes", metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("key_id", sa.BigInteger, nullable=False),
    sa.Column("key_hash", sa.String(64), nullable=False),
    sa.Column("changed_at", sa.Double, nullable=False, index=True),
    sqlite_autoincrement=True,
)

usage_records = sa.Table(
    "metrics", metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("request_id", sa.String(64), nullable=True),
    sa.Column("key_id", sa.String(64), nullable=True),
    sa.Column("model", sa.String(191), nullable=False),
    sa.Column("replica", sa.String(191), nullable=True),
    sa.Column("endpoint", sa.String(32), nullable=False),
    sa.Column("stream", sa.Boolean, nullable=False),
    sa.Column("status", sa.Integer, nullable=False),
    sa.Column("error", sa.String(64), nullable=True),
    sa.Column("prompt_tokens", sa.Integer, nullable=False),
    sa.Column("completion_tokens", sa.Integer, nullable=False),
    sa.Column("total_tokens", sa.Integer, nullable=False),
    sa.Column("latency_ms", sa.Double, nullable=False),
    sa.Column("ttft_ms", sa.Double, nullable=True),
    sa.Column("images", sa.Integer, nullable=True),  # image generation: pictures made
    sa.Column("steps", sa.Integer, nullable=True),  # and denoising steps run
    sa.Column("image_units", sa.Integer, nullable=True),  # and their cost units
    # in the currency unit, at the prices when it was made (``inferd.prices``)
    sa.Column("cost", sa.Double, nullable=False, server_default="0"),
    sa.Index("ix_metrics_key_id_created_at", "key_id", "created_at"),
    sa.Index("ix_metrics_model_created_at", "model", "created_at"),
    sa.Index("ix_metrics_created_at", "created_at"),
)


spool_marks = sa.Table(
    "spool_marks", metadata,
    sa.Column("spool", sa.String(32), primary_key=True),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
)
