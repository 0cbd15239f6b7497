"""Table definitions: one ``MetaData`` for the whole schema.

Conventions: times are epoch seconds in ``Double`` columns (identical on SQLite, PostgreSQL and
MariaDB); ids exposed over the API are strings unless a replaced system's API needs integers;
JSON documents are ``JSON`` columns. Feature tables live in ``tables_*.py`` modules beside this
one and are imported at the bottom so that ``metadata`` always describes the whole schema.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData(naming_convention={
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
})

# Small key/value facts about this installation (instance id, bootstrap state).
kv = sa.Table(
    "kv", metadata,
    sa.Column("key", sa.String(191), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
)

from inferd.store import (  # noqa: E402,F401
    tables_control,
    tables_jobs,
    tables_replicas,
    tables_responses,
)
