"""abuse: per-key storage quotas, and image cost units in key limits and usage records

Revision ID: 0012
Revises: 0009

``storage_usage`` counts each key's stored bytes and objects, ``storage_objects`` what each
object counted (``inferd.store.storage``); both start from the files and contexts already
stored. Keys get ``storage_bytes`` / ``storage_objects`` (their own quota) and ``upm`` /
``image_budget`` (image cost units per minute and per budget period); usage records get
``image_units``.
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("api_keys", sa.Column("upm", sa.Integer, nullable=True))
    op.add_column("api_keys", sa.Column("image_budget", sa.BigInteger, nullable=True))
    op.add_column("api_keys", sa.Column("storage_bytes", sa.BigInteger, nullable=True))
    op.add_column("api_keys", sa.Column("storage_objects", sa.Integer, nullable=True))
    op.add_column("metrics", sa.Column("image_units", sa.Integer, nullable=True))
    usage = op.create_table(
        "storage_usage",
        sa.Column("owner", sa.String(64), primary_key=True),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("objects", sa.Integer, nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
    )
    objects = op.create_table(
        "storage_objects",
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("object_id", sa.String(64), primary_key=True),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
    )
    _count_existing(usage, objects)


def _count_existing(usage: sa.Table, objects: sa.Table) -> None:
    """Count the files (pictures too) and contexts stored before quotas existed."""
    bind = op.get_bind()
    files = sa.table("files", sa.column("id", sa.String), sa.column("owner", sa.String),
                     sa.column("purpose", sa.String), sa.column("bytes", sa.BigInteger))
    contexts = sa.table("s0_contexts", sa.column("id", sa.Integer),
                        sa.column("owner", sa.String), sa.column("content", sa.Text))
    rows: list[dict[str, object]] = []
    for file_id, owner, purpose, size in bind.execute(
            sa.select(files.c.id, files.c.owner, files.c.purpose, files.c.bytes)).all():
        rows.append({"kind": "image" if purpose == "image" else "file", "object_id": file_id,
                     "owner": owner or "", "bytes": int(size or 0)})
    for context_id, owner, content in bind.execute(
            sa.select(contexts.c.id, contexts.c.owner, contexts.c.content)).all():
        rows.append({"kind": "context", "object_id": str(context_id), "owner": owner or "",
                     "bytes": len((content or "").encode())})
    totals: dict[str, list[int]] = {}
    for row in rows:
        total = totals.setdefault(str(row["owner"]), [0, 0])
        total[0] += int(row["bytes"])  # type: ignore[call-overload]
        total[1] += 1
    for start in range(0, len(rows), 1000):
        op.bulk_insert(objects, rows[start:start + 1000])
    now = time.time()
    if totals:
        op.bulk_insert(usage, [{"owner": owner, "bytes": b, "objects": n, "updated_at": now}
                               for owner, (b, n) in totals.items()])


def downgrade() -> None:
    op.drop_table("storage_objects")
    op.drop_table("storage_usage")
    with op.batch_alter_table("metrics") as batch:
        batch.drop_column("image_units")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("storage_objects")
        batch.drop_column("storage_bytes")
        batch.drop_column("image_budget")
        batch.drop_column("upm")
