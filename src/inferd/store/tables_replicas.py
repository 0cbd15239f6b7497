"""Tables of models and replicas (the proxy toolkit's names: ``llm_models``, ``replicas``,
``replica_security_rules``).

A model is a public name with aliases and fallback models; a replica is one remote place it
runs (``http`` or ``triton``; local engines are configured per process and not stored).
Upstream credentials live in ``replica_security_rules.secret`` so that every read of a replica
row is free of them; they are read only to build the engine that uses them.
"""

from __future__ import annotations

import sqlalchemy as sa

from inferd.store.schema import BigId, metadata

llm_models = sa.Table(
    "llm_models", metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(191), nullable=False, unique=True),
    sa.Column("aliases", sa.JSON, nullable=False),
    sa.Column("fallbacks", sa.JSON, nullable=False),
    sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("source", sa.String(16), nullable=False, server_default="api"),  # api | config
    # prefix | least_busy | weighted; NULL: the server's default (``inferd.routing.router``)
    sa.Column("routing", sa.String(16), nullable=True),
    # input, output, cached_input (per million tokens), image (each), step (per step of each
    # image); NULL: no price
    sa.Column("price", sa.JSON, nullable=True),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
)

replicas = sa.Table(
    "replicas", metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("model_id", BigId, sa.ForeignKey("llm_models.id", ondelete="CASCADE"),
              nullable=False, index=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("url", sa.String(2048), nullable=False),
    sa.Column("upstream_model", sa.String(255), nullable=False, server_default=""),
    sa.Column("weight", sa.Double, nullable=False),
    sa.Column("timeout", sa.Double, nullable=False),
    sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("options", sa.JSON, nullable=False),
    sa.Column("source", sa.String(16), nullable=False, server_default="api"),  # api | config
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
)

replica_security_rules = sa.Table(
    "replica_security_rules", metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("replica_id", BigId, sa.ForeignKey("replicas.id", ondelete="CASCADE"),
              nullable=False, index=True),
    sa.Column("rule", sa.String(32), nullable=False),  # bearer_token
    sa.Column("secret", sa.Text, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
)
