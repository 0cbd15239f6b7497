"""Repository for installation facts kept in the ``kv`` table."""

from __future__ import annotations

import time

import sqlalchemy as sa

from inferd.store.db import Database
from inferd.store.tables import kv


class KeyValueStore:
    """Read and write small facts (``kv`` table)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, key: str) -> str | None:
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(sa.select(kv.c.value).where(kv.c.key == key))).first()
        return None if row is None else str(row[0])

    async def set(self, key: str, value: str) -> None:
        async with self.db.engine.begin() as conn:
            updated = await conn.execute(
                sa.update(kv).where(kv.c.key == key).values(value=value, updated_at=time.time()))
            if updated.rowcount == 0:
                await conn.execute(sa.insert(kv).values(key=key, value=value,
                                                        updated_at=time.time()))

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
