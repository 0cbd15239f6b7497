"""S0's contexts (stored prompts); S0's results are jobs with ``source = "s0"``."""

from __future__ import annotations

import time
from dataclasses import dataclass

import sqlalchemy as sa

from inferd.store.db import Database
from inferd.store.storage import CONTEXT, Quota, ensure_counter, reserve
from inferd.store.tables_jobs import s0_contexts


@dataclass
class ContextRecord:
    """One S0 context."""

    id: int
    owner: str | None
    content: str
    created_at: float


class ContextStore:
    """All SQL on S0 contexts."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, owner: str | None, content: str,
                     quota: Quota | None = None) -> ContextRecord:
        """Store a context, counted in its owner's storage (refused past ``quota``)."""
        now = time.time()
        await ensure_counter(self.db, owner)
        async with self.db.engine.begin() as conn:
            result = await conn.execute(sa.insert(s0_contexts).values(
                owner=owner, content=content, created_at=now))
            new_id = int(result.inserted_primary_key[0])  # type: ignore[index]
            await reserve(conn, kind=CONTEXT, object_id=str(new_id), owner=owner,
                          size=len(content.encode()), quota=quota)
        return ContextRecord(id=new_id, owner=owner, content=content, created_at=now)

    async def get(self, context_id: int) -> ContextRecord | None:
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(sa.select(s0_contexts)
                                      .where(s0_contexts.c.id == context_id))).first()
        return None if row is None else ContextRecord(**dict(row._mapping))

    async def all(self, owner: str | None, all_owners: bool) -> list[ContextRecord]:
        query = sa.select(s0_contexts).order_by(s0_contexts.c.id)
        if not all_owners:
            query = query.where(s0_contexts.c.owner.is_(None) if owner is None
                                else s0_contexts.c.owner == owner)
        async with self.db.engine.connect() as conn:
            return [ContextRecord(**dict(r._mapping)) for r in (await conn.execute(query)).all()]
