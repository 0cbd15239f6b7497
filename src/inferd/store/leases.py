"""Cluster-wide leases on the ``kv`` table: one holder at a time, taken over when it lapses.

Periodic work (lost-job recovery, deadlines, retention) runs in the process holding the lease,
once per cluster instead of once per process. A row, not an advisory lock, so it works the same
on SQLite, PostgreSQL and MySQL and survives a dropped connection.
"""

from __future__ import annotations

import time

import sqlalchemy as sa

from inferd.store.db import Database
from inferd.store.tables import kv


class LeaseStore:
    """Take and keep named leases."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def acquire(self, name: str, holder: str, ttl: float) -> bool:
        """Take or renew ``name`` for ``holder``; False while another holder's lease is live."""
        key, now = f"lease:{name}", time.time()
        async with self.db.engine.begin() as conn:
            taken = await conn.execute(
                sa.update(kv).where(kv.c.key == key,
                                    sa.or_(kv.c.value == holder, kv.c.updated_at < now - ttl))
                .values(value=holder, updated_at=now))
            if taken.rowcount == 1:
                return True
        try:
            async with self.db.engine.begin() as conn:
                await conn.execute(sa.insert(kv).values(key=key, value=holder, updated_at=now))
            return True
        except sa.exc.IntegrityError:  # someone else holds it
            return False

    async def release(self, name: str, holder: str) -> None:
        async with self.db.engine.begin() as conn:
            await conn.execute(sa.delete(kv).where(kv.c.key == f"lease:{name}",
                                                   kv.c.value == holder))
