"""All SQL on stored Responses API responses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from inferd.store.db import Database
from inferd.store.storage import RESPONSE, ensure_counter, release, reserve
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


def stored_bytes(record: ResponseRecord) -> int:
    """What a stored response counts in its key's storage: its documents as JSON."""
    return len(orjson.dumps([record.history, record.input_items, record.response]))


async def count_response(conn: AsyncConnection, record: ResponseRecord) -> None:
    """Count a response in its key's storage, in the transaction that stores it. Never
    refused: the work is done by then (``ResponseService`` checks for room before it runs)."""
    await reserve(conn, kind=RESPONSE, object_id=record.id, owner=record.owner,
                  size=stored_bytes(record), quota=None)


class ResponseStore:
    """Insert, read and delete stored responses."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def insert(self, record: ResponseRecord) -> None:
        await ensure_counter(self.db, record.owner)
        async with self.db.engine.begin() as conn:
            await count_response(conn, record)
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
            await release(conn, RESPONSE, [response_id])
        return bool(result.rowcount)
