"""Tables of the per-key storage quotas (``inferd.store.storage``).

``storage_usage`` holds one row per key: the bytes and objects its stored files, contexts,
responses and pictures take now, updated in the transaction that stores or deletes one, so a
quota check is one conditional ``UPDATE`` of that row. ``storage_objects`` remembers what each
object counted, so that deleting it gives back exactly that (whatever its own table stores).
The anonymous caller (keys off) is the owner ``""``.
"""

from __future__ import annotations

import sqlalchemy as sa

from inferd.store.schema import metadata

storage_usage = sa.Table(
    "storage_usage", metadata,
    sa.Column("owner", sa.String(64), primary_key=True),
    sa.Column("bytes", sa.BigInteger, nullable=False),
    sa.Column("objects", sa.Integer, nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
)

storage_objects = sa.Table(
    "storage_objects", metadata,
    sa.Column("kind", sa.String(16), primary_key=True),
    sa.Column("object_id", sa.String(64), primary_key=True),
    sa.Column("owner", sa.String(64), nullable=False),
    sa.Column("bytes", sa.BigInteger, nullable=False),
)
