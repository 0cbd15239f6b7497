"""The contexts-and-results API's contexts (stored prompts); its results are jobs with
``source = "contexts"``."""

from __future__ import annotations

import time
from dataclasses import dataclass

import sqlalchemy as sa

from inferd.store.db import Database
from inferd.store.storage import CONTEXT, Quota, ensure_counter, reserve
from inferd.store.tables_jobs import compat_contexts


@dataclass
class ContextRecord:
    """One context of the contexts-and-results API."""

    id: int
    owner: str | None
    content: str
    created_at: float


class ContextStore:
    """All SQL on the contexts-and-results API's contexts."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, owner: str | None, content: str,
                     quota: Quota | None = None) -> ContextRecord:
        """Store a context, counted in its owner's storage (refused past ``quota``)."""
        now = time.time()
        await ensure_counter(self.db, owner)
        async with self.db.engine.begin() as conn:
            result = await conn.execute(sa.insert(compat_contexts).values(
                owner=owner, content=content, created_at=now))
            new_id = int(result.inserted_primary_key[0])  # type: ignore[index]
            await reserve(conn, kind=CONTEXT, object_id=str(new_id), owner=owner,
                          size=len(content.encode()), quota=quota)
        return ContextRecord(id=new_id, owner=owner, content=content, created_at=now)

    async def get(self, context_id: int) -> ContextRecord | None:
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(sa.select(compat_contexts)
                                      .where(compat_contexts.c.id == context_id))).first()
        return None if row is None else ContextRecord(**dict(row._mapping))

    async def all(self, owner: str | None, all_owners: bool) -> list[ContextRecord]:
        query = sa.select(compat_contexts).order_by(compat_contexts.c.id)
        if not all_owners:
            query = query.where(compat_contexts.c.owner.is_(None) if owner is None
                                else compat_contexts.c.owner == owner)
        async with self.db.engine.connect() as conn:
            return [ContextRecord(**dict(r._mapping)) for r in (await conn.execute(query)).all()]
