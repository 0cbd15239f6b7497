"""Repository for installation facts kept in the ``kv`` table.

Facts that are secrets (``SECRET_KEYS``) are stored encrypted (``Database.secrets``).
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite

from inferd.store.db import Database
from inferd.store.tables import kv

WEBHOOK_SECRET = "jobs.webhook_secret"  # the installation's webhook signing secret
# the key that encrypts single sign-on's cookies (``inferd.auth.sso``)
SSO_COOKIE_KEY = "sso.cookie_key"
SECRET_KEYS = (WEBHOOK_SECRET, SSO_COOKIE_KEY)


def kv_upsert(dialect: str, key: str, value: str) -> sa.Executable:
    """One statement storing ``value`` under ``key`` whether the row exists or not: two
    transactions writing a key first queue on its row instead of racing to insert it (on
    MariaDB an update finding no row then an insert deadlock each other, and the deadlock
    rolls the whole transaction back)."""
    row = {"key": key, "value": value, "updated_at": time.time()}
    change = {"value": value, "updated_at": row["updated_at"]}
    if dialect in ("mysql", "mariadb"):
        return mysql.insert(kv).values(row).on_duplicate_key_update(change)
    if dialect == "postgresql":
        return postgresql.insert(kv).values(row).on_conflict_do_update(
            index_elements=[kv.c.key], set_=change)
    return sqlite.insert(kv).values(row).on_conflict_do_update(
        index_elements=[kv.c.key], set_=change)


class KeyValueStore:
    """Read and write small facts (``kv`` table)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, key: str) -> str | None:
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(sa.select(kv.c.value).where(kv.c.key == key))).first()
        return None if row is None else str(row[0])

    async def set(self, key: str, value: str) -> None:
        """Store ``value`` under ``key`` in one upsert (two first writes cannot collide)."""
        async with self.db.engine.begin() as conn:
            await conn.execute(kv_upsert(self.db.dialect, key, value))

    async def setdefault(self, key: str, value: str) -> str:
        """Store ``value`` unless the key exists; return what is stored (race-safe)."""
        try:
            async with self.db.engine.begin() as conn:
                await conn.execute(sa.insert(kv).values(key=key, value=value,
                                                        updated_at=time.time()))
            return value
        except sa.exc.IntegrityError:
            current = await self.get(key)
            assert current is not None
            return current

    async def setdefault_secret(self, key: str, value: str) -> str:
        """``setdefault`` for a secret: stored encrypted, returned decrypted."""
        return self.db.secrets.open(await self.setdefault(key, self.db.secrets.seal(value)))
