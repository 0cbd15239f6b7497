"""What every table module shares: the one ``MetaData`` and the column types used by several.

Conventions: times are epoch seconds in ``Double`` columns (identical on SQLite, PostgreSQL and
MariaDB); ids exposed over the API are strings unless a replaced system's API needs integers;
JSON documents are ``JSON`` columns. The tables themselves live in ``tables_*.py`` modules that
import this one; ``inferd.store.tables`` gathers them so that its ``metadata`` describes the
whole schema (dependencies run one way: tables -> tables_* -> schema).
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

# An integer primary key that autoincrements on all three stores (SQLite needs INTEGER for its
# rowid alias; PostgreSQL and MariaDB get a 64-bit column).
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
