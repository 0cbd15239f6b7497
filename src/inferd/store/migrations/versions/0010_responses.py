"""responses: each stored response keeps its own items and names its predecessor;
conversations and their items; prompt templates and their versions

Revision ID: 0010
Revises: 0009

A response row stored the whole conversation up to its input (``history``), so a chain of N
turns stored N²/2 turns. Rows now keep their own input items and the id of the response they
continued (``previous_id``); a reader walks the chain. Existing rows stay readable: a row whose
predecessor is stored (same owner, finished) is rewritten to point at it and drops its copy of
the history; any other keeps its ``history``, where a walk stops. ``size_bytes`` is filled for
every row (what a per-key storage quota counts).
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_PAGE = 200


def _bytes(*documents: Any) -> int:
    return sum(len(json.dumps(d, separators=(",", ":"), ensure_ascii=False).encode())
               for d in documents if d is not None)


def _loads(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value


def upgrade() -> None:
    with op.batch_alter_table("responses") as batch:
        batch.alter_column("history", existing_type=sa.JSON, nullable=True)
        batch.add_column(sa.Column("previous_id", sa.String(64), nullable=True))
        batch.add_column(sa.Column("size_bytes", sa.BigInteger, nullable=False,
                                   server_default="0"))
        batch.add_column(sa.Column("deleted", sa.Boolean, nullable=False,
                                   server_default=sa.false()))
        batch.create_index("ix_responses_previous_id", ["previous_id"])
    op.create_table(
        "conversations",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("owner", sa.String(64), nullable=True),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("metadata", sa.JSON, nullable=False),
    )
    op.create_table(
        "conversation_items",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  primary_key=True, autoincrement=True),
        sa.Column("conversation_id", sa.String(64), nullable=False),
        sa.Column("item_id", sa.String(64), nullable=False),
        sa.Column("item", sa.JSON, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
    )
    op.create_index("ix_conversation_items_conversation", "conversation_items",
                    ["conversation_id", "seq"])
    op.create_index("ix_conversation_items_item", "conversation_items",
                    ["conversation_id", "item_id"])
    op.create_table(
        "prompts",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("owner", sa.String(64), nullable=True),
        sa.Column("name", sa.String(191), nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("latest_version", sa.Integer, nullable=False),
    )
    op.create_table(
        "prompt_versions",
        sa.Column("prompt_id", sa.String(64), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("template", sa.JSON, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
    )
    _rewrite_rows()


def _rewrite_rows() -> None:
    """Point each row at its stored predecessor (dropping its history), and size every row."""
    bind = op.get_bind()
    rows = sa.table("responses", sa.column("id", sa.String), sa.column("owner", sa.String),
                    sa.column("history", sa.JSON), sa.column("input_items", sa.JSON),
                    sa.column("response", sa.JSON), sa.column("previous_id", sa.String),
                    sa.column("size_bytes", sa.BigInteger))
    last = ""
    while True:
        page = bind.execute(sa.select(rows.c.id, rows.c.owner, rows.c.input_items,
                                      rows.c.response)
                            .where(rows.c.id > last).order_by(rows.c.id).limit(_PAGE)).all()
        if not page:
            return
        last = page[-1].id
        for row in page:
            response, items = _loads(row.response), _loads(row.input_items)
            previous_id = (response or {}).get("previous_response_id")
            previous = None if previous_id is None else bind.execute(
                sa.select(rows.c.owner, rows.c.response).where(rows.c.id == previous_id)).first()
            status = (_loads(previous.response) or {}).get("status") if previous else None
            if (previous is not None and previous.owner == row.owner
                    and status in ("completed", "incomplete")):
                bind.execute(sa.update(rows).where(rows.c.id == row.id).values(
                    previous_id=previous_id, history=sa.null(),
                    size_bytes=_bytes(items, response)))
            else:
                history = _loads(bind.execute(sa.select(rows.c.history)
                                              .where(rows.c.id == row.id)).scalar())
                bind.execute(sa.update(rows).where(rows.c.id == row.id).values(
                    size_bytes=_bytes(history, items, response)))


def downgrade() -> None:
    op.drop_table("prompt_versions")
    op.drop_table("prompts")
    op.drop_index("ix_conversation_items_item", "conversation_items")
    op.drop_index("ix_conversation_items_conversation", "conversation_items")
    op.drop_table("conversation_items")
    op.drop_table("conversations")
    _restore_histories()
    with op.batch_alter_table("responses") as batch:
        batch.drop_index("ix_responses_previous_id")
        batch.drop_column("deleted")
        batch.drop_column("size_bytes")
        batch.drop_column("previous_id")
        batch.alter_column("history", existing_type=sa.JSON, nullable=False)


def _restore_histories() -> None:
    """Give every row its whole history back (the shape revision 0009 reads), oldest first."""
    bind = op.get_bind()
    rows = sa.table("responses", sa.column("id", sa.String), sa.column("history", sa.JSON),
                    sa.column("input_items", sa.JSON), sa.column("response", sa.JSON),
                    sa.column("previous_id", sa.String), sa.column("created_at", sa.Double),
                    sa.column("deleted", sa.Boolean))
    order = bind.execute(sa.select(rows.c.id).where(rows.c.history.is_(None))
                         .order_by(rows.c.created_at)).scalars().all()
    for row_id in order:
        row = bind.execute(sa.select(rows.c.input_items, rows.c.previous_id)
                           .where(rows.c.id == row_id)).one()
        history: list[Any] = []
        if row.previous_id is not None:
            previous = bind.execute(sa.select(rows.c.history, rows.c.response)
                                    .where(rows.c.id == row.previous_id)).first()
            if previous is not None:
                history = (list(_loads(previous.history) or [])
                           + list((_loads(previous.response) or {}).get("output") or []))
        bind.execute(sa.update(rows).where(rows.c.id == row_id).values(
            history=history + list(_loads(row.input_items) or [])))
    bind.execute(sa.delete(rows).where(rows.c.deleted.is_(True)))  # kept for their successors
