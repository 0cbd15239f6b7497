"""The Responses API's stored objects: responses (``store: true``), conversations and their
items, and prompt templates with their versions.

A response row holds its own input items, its Response object (with its output) and the id of
the response it continued (``previous_id``): a later request reads the conversation by walking
that chain back, so each response stores only what it added (a chain of N turns stores N
turns, not N²/2). Rows written before revision 0010 hold the whole conversation up to their
input in ``history``; a walk stops at such a row. A background response has no object until
its job finishes: its state and output are the job's (``job_id``), so every gateway sharing the
database sees the same answer. A deleted response that later responses continue from stays as
a hidden row (``deleted``) until the last of them is deleted, so their conversations stay whole.
"""

from __future__ import annotations

import sqlalchemy as sa

from inferd.store.schema import BigId, metadata

responses = sa.Table(
    "responses", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("owner", sa.String(64), nullable=True),  # API key id; NULL when keys are off
    sa.Column("model", sa.String(191), nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("job_id", sa.String(64), nullable=True),  # background responses only
    # rows before revision 0010 only (SQL NULL otherwise, not a JSON null)
    sa.Column("history", sa.JSON(none_as_null=True), nullable=True),
    sa.Column("input_items", sa.JSON, nullable=False),
    sa.Column("response", sa.JSON, nullable=True),
    sa.Column("previous_id", sa.String(64), nullable=True, index=True),
    # the bytes this row stores (its JSON documents), for per-key storage accounting
    sa.Column("size_bytes", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("deleted", sa.Boolean, nullable=False, server_default=sa.false()),
)

conversations = sa.Table(
    "conversations", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("owner", sa.String(64), nullable=True),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("metadata", sa.JSON, nullable=False),
)

# The items of a conversation in the order they were added (``seq``).
conversation_items = sa.Table(
    "conversation_items", metadata,
    sa.Column("seq", BigId, primary_key=True, autoincrement=True),
    sa.Column("conversation_id", sa.String(64), nullable=False),
    sa.Column("item_id", sa.String(64), nullable=False),
    sa.Column("item", sa.JSON, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Index("ix_conversation_items_conversation", "conversation_id", "seq"),
    sa.Index("ix_conversation_items_item", "conversation_id", "item_id"),
)

# Prompt templates (Responses' ``prompt``): one row per prompt, one per version of it.
prompts = sa.Table(
    "prompts", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("owner", sa.String(64), nullable=True),  # the key that may use it
    sa.Column("name", sa.String(191), nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("latest_version", sa.Integer, nullable=False),
)

prompt_versions = sa.Table(
    "prompt_versions", metadata,
    sa.Column("prompt_id", sa.String(64), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("template", sa.JSON, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
)
