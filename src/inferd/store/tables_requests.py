"""The request log's table: one row per request an operator can search (``inferd.reqlog``).

Rows are inserted in batches by the request log's writer and removed only past the retention.
On PostgreSQL the table is partitioned by day on ``created_at`` (migration ``0019``: its
primary key is ``(created_at, id)``, each day a partition ``request_log_pYYYYMMDD``, retention
drops whole partitions); on SQLite and MariaDB it is a plain table (retention deletes in
bounded chunks). The indexes serve the filters of a page, newest first.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from inferd.store.schema import BigId, metadata

# a body is capped at ``request_log_body_bytes`` (at most 8 MiB): MariaDB's TEXT holds 64 KiB
LongText = sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")

request_log = sa.Table(
    "request_log", metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("request_id", sa.String(64), nullable=True),
    sa.Column("key_id", sa.String(64), nullable=True),
    sa.Column("key_name", sa.String(200), nullable=True),
    sa.Column("model", sa.String(191), nullable=False),
    sa.Column("replica", sa.String(191), nullable=True),
    sa.Column("endpoint", sa.String(32), nullable=False),
    sa.Column("stream", sa.Boolean, nullable=False),
    sa.Column("status", sa.Integer, nullable=False),
    sa.Column("error", sa.String(64), nullable=True),
    sa.Column("latency_ms", sa.Double, nullable=False),
    sa.Column("ttft_ms", sa.Double, nullable=True),
    sa.Column("prompt_tokens", sa.Integer, nullable=False),
    sa.Column("completion_tokens", sa.Integer, nullable=False),
    sa.Column("cached_tokens", sa.Integer, nullable=True),
    sa.Column("cost", sa.Double, nullable=False),
    # replicas tried (1: the first answered; more: retries and fallbacks; 0: refused before)
    sa.Column("attempts", sa.SmallInteger, nullable=False),
    sa.Column("client_address", sa.String(64), nullable=True),
    sa.Column("user_agent", sa.String(256), nullable=True),
    sa.Column("trace_id", sa.String(32), nullable=True),  # W3C traceparent's trace id
    # the bodies, of the requests of a key with ``log_bodies`` only (capped, redacted)
    sa.Column("request_body", LongText, nullable=True),
    sa.Column("response_body", LongText, nullable=True),
    # the key's user and team when the request was made (no foreign key: a record outlives
    # a removed user or team, and the writer's batches never wait on their rows)
    sa.Column("user_id", BigId, nullable=True),
    sa.Column("team_id", BigId, nullable=True),
)
