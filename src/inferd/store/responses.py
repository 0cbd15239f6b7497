"""All SQL on stored Responses API responses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from inferd.store.db import Database
from inferd.store.tables_responses import responses


@dataclass
class ResponseRecord:
    """One stored response."""

    id: str
    owner: str | None
    model: str
    created_at: float
    history: list[dict[str, Any]]
    input_items: list[dict[str, Any]]
    job_id: str | None = None
    response: dict[str, Any] | None = None


class ResponseStore:
    """Insert, read and delete stored responses."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def insert(self, record: ResponseRecord) -> None:
        async with self.db.engine.begin() as conn:
            await conn.execute(sa.insert(responses).values(
                id=record.id, owner=record.owner, model=record.model,
                created_at=record.created_at, job_id=record.job_id, history=record.history,
                input_items=record.input_items, response=record.response))

    async def get(self, response_id: str) -> ResponseRecord | None:
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(sa.select(responses)
                                      .where(responses.c.id == response_id))).first()
        return None if row is None else ResponseRecord(**dict(row._mapping))

    async def set_response(self, response_id: str, response: dict[str, Any]) -> None:
        async with self.db.engine.begin() as conn:
            await conn.execute(sa.update(responses).where(responses.c.id == response_id)
                               .values(response=response))

    async def delete(self, response_id: str) -> bool:
        async with self.db.engine.begin() as conn:
            result = await conn.execute(sa.delete(responses)
                                        .where(responses.c.id == response_id))
        return bool(result.rowcount)
