"""key identity: key ids are never reused; display prefixes reveal at most a few characters

Revision ID: 0009
Revises: 0008

Objects (jobs, files, batches, contexts, responses, usage) name their owner by key id. SQLite
hands out the largest id plus one, so a new key could take the id of a deleted key and with it
that key's objects. ``AUTOINCREMENT`` makes SQLite remember the largest id ever used; the
counter is also moved past every id that still owns something (keys deleted before this
revision). PostgreSQL sequences and MariaDB's auto-increment never go back.

Display prefixes stored before showed up to 16 characters of a key chosen by an admin (the
whole key at the minimum length): they are cut to what ``inferd.auth.keys.display_prefix``
shows now.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

# (table, column) pairs that hold the id of the key that owns a row.
_OWNERS = (("jobs", "owner"), ("files", "owner"), ("batches", "owner"),
           ("s0_contexts", "owner"), ("responses", "owner"), ("metrics", "key_id"))
_MARK = "sk-inferd-"
_SHOWN = 4  # characters of the secret a display prefix shows (inferd.auth.keys)


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        with op.batch_alter_table("api_keys", recreate="always",
                                  table_kwargs={"sqlite_autoincrement": True}):
            pass
        used = [bind.execute(sa.text(f"SELECT MAX(CAST({column} AS INTEGER)) FROM {table}"))
                .scalar() for table, column in _OWNERS]
        used.append(bind.execute(sa.text("SELECT MAX(id) FROM api_keys")).scalar())
        highest = max((int(v) for v in used if v is not None), default=0)
        if highest > 0:
            bind.execute(sa.text("DELETE FROM sqlite_sequence WHERE name = 'api_keys'"))
            bind.execute(sa.text("INSERT INTO sqlite_sequence (name, seq) "
                                 "VALUES ('api_keys', :seq)"), {"seq": highest})
    keys = sa.table("api_keys", sa.column("id", sa.Integer), sa.column("prefix", sa.String))
    for key_id, prefix in bind.execute(sa.select(keys.c.id, keys.c.prefix)).all():
        mark = _MARK if prefix.startswith(_MARK) else ""
        shown = prefix[:len(mark) + _SHOWN]
        if shown != prefix:
            bind.execute(sa.update(keys).where(keys.c.id == key_id).values(prefix=shown))


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        with op.batch_alter_table("api_keys", recreate="always"):
            pass
