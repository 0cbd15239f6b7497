"""compat names: what the replaced systems' APIs store is named after those APIs

Revision ID: 0013
Revises: 0012

The contexts-and-results API's stored prompts move from ``s0_contexts`` to
``compat_contexts`` (on PostgreSQL its id sequence and primary key follow). Jobs that API
started are marked ``source = "contexts"`` and those of the queued generate API
``source = "queued"`` (they were ``"s0"`` and ``"s1"``); the model-host API's current model per
key is kept under ``model-host.current`` instead of ``s4.current``. The downgrade puts every
old name back.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

# (old, new) names: the table, the job sources, the prefix of the model host's stored state.
_TABLE = ("s0_contexts", "compat_contexts")
_SOURCES = (("s0", "contexts"), ("s1", "queued"))
_STATE = ("s4.current", "model-host.current")


def upgrade() -> None:
    _rename(forward=True)


def downgrade() -> None:
    _rename(forward=False)


def _rename(*, forward: bool) -> None:
    def pick(pair: tuple[str, str]) -> tuple[str, str]:
        return pair if forward else (pair[1], pair[0])

    old_table, new_table = pick(_TABLE)
    op.rename_table(old_table, new_table)
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":  # the id sequence and primary key keep their names
        sequence = bind.execute(sa.text("SELECT pg_get_serial_sequence(:t, 'id')"),
                                {"t": new_table}).scalar()
        if sequence and old_table in sequence:
            op.execute(f"ALTER SEQUENCE {sequence} RENAME TO {new_table}_id_seq")
        key = sa.inspect(bind).get_pk_constraint(new_table).get("name")
        if key and old_table in key:
            op.execute(f"ALTER TABLE {new_table} RENAME CONSTRAINT {key} "
                       f"TO {key.replace(old_table, new_table)}")
    jobs = sa.table("jobs", sa.column("source", sa.String))
    for pair in _SOURCES:
        old, new = pick(pair)
        op.execute(jobs.update().where(jobs.c.source == old).values(source=new))
    kv = sa.table("kv", sa.column("key", sa.String))
    old_state, new_state = pick(_STATE)
    rows = bind.execute(sa.select(kv.c.key).where(
        sa.or_(kv.c.key == old_state, kv.c.key.like(f"{old_state}:%")))).scalars().all()
    for key in rows:
        op.execute(kv.update().where(kv.c.key == key)
                   .values(key=new_state + key[len(old_state):]))
