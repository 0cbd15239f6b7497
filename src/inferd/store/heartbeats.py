"""Heartbeats of self-registered replicas (``inferd engine``), on the ``kv`` table.

An engine's replica row is written once; its liveness is a separate row it touches every few
seconds, so that beating does not look like a change of the replica (which would rebuild it in
every gateway). A replica whose heartbeat is older than its ``stale_after`` is left out of the
catalogue, so routing drops it when the engine stops.
"""

from __future__ import annotations

import time

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from inferd.store.db import Database
from inferd.store.tables import kv

PREFIX = "heartbeat:replica:"


class HeartbeatStore:
    """Beat for a replica; tell which self-registered replicas are alive."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def beat(self, replica_id: int, stale_after: float) -> None:
        key, value = f"{PREFIX}{replica_id}", orjson.dumps({"stale_after": stale_after}).decode()
        async with self.db.engine.begin() as conn:
            updated = await conn.execute(sa.update(kv).where(kv.c.key == key)
                                         .values(value=value, updated_at=time.time()))
            if updated.rowcount == 0:
                await conn.execute(sa.insert(kv).values(key=key, value=value,
                                                        updated_at=time.time()))

    async def forget(self, replica_id: int) -> None:
        async with self.db.engine.begin() as conn:
            await conn.execute(sa.delete(kv).where(kv.c.key == f"{PREFIX}{replica_id}"))


    async def last_beats(self) -> dict[int, float]:
        """Replica id -> when its heartbeat was last written (epoch seconds)."""
        async with self.db.engine.connect() as conn:
            rows = await conn.execute(sa.select(kv.c.key, kv.c.updated_at)
                                      .where(kv.c.key.like(f"{PREFIX}%")))
            return {int(key.removeprefix(PREFIX)): float(at) for key, at in rows}


async def alive(conn: AsyncConnection, now: float | None = None) -> set[int]:
    """Ids of the replicas whose heartbeat is fresh."""
    now = time.time() if now is None else now
    rows = await conn.execute(sa.select(kv.c.key, kv.c.value, kv.c.updated_at)
                              .where(kv.c.key.like(f"{PREFIX}%")))
    fresh = set()
    for key, value, updated_at in rows:
        if updated_at + float(orjson.loads(value)["stale_after"]) >= now:
            fresh.add(int(key.removeprefix(PREFIX)))
    return fresh
