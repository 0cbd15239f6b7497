"""All SQL on stored Responses API responses.

A row stores what its response added (its input items and its Response object) and the id of
the response it continued; ``chain`` reads a conversation back in one recursive query.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from inferd.jsontypes import JsonObject
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
    input_items: list[JsonObject]
    job_id: str | None = None
    response: JsonObject | None = None
    previous_id: str | None = None
    # the whole conversation up to this input: rows stored before revision 0010 only
    history: list[JsonObject] | None = None
    deleted: bool = False
    size_bytes: int = field(default=0)


def document_bytes(document: object) -> int:
    """The size of one JSON document as stored (compact UTF-8)."""
    return 0 if document is None else len(orjson.dumps(document))


def stored_bytes(record: ResponseRecord) -> int:
    """The bytes a stored response occupies: its JSON documents (what a storage quota counts;
    kept in the row's ``size_bytes``, so ``SUM(size_bytes)`` per owner is a key's total)."""
    return (document_bytes(record.history) + document_bytes(record.input_items)
            + document_bytes(record.response))


class ChainTooLong(Exception):
    """A conversation has more stored responses than the walk may read."""


async def count_response(conn: AsyncConnection, record: ResponseRecord) -> None:
    """Count a response in its key's storage, in the transaction that stores it. Never
    refused: the work is done by then (``ResponseService`` checks for room before it runs)."""
    await reserve(conn, kind=RESPONSE, object_id=record.id, owner=record.owner,
                  size=stored_bytes(record), quota=None)


class ResponseStore:
    """Insert, read, walk and delete stored responses."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def insert(self, record: ResponseRecord) -> None:
        record.size_bytes = stored_bytes(record)
        await ensure_counter(self.db, record.owner)
        async with self.db.engine.begin() as conn:
            await count_response(conn, record)
            await conn.execute(sa.insert(responses).values(
                id=record.id, owner=record.owner, model=record.model,
                created_at=record.created_at, job_id=record.job_id, history=record.history,
                input_items=record.input_items, response=record.response,
                previous_id=record.previous_id, size_bytes=record.size_bytes))

    async def get(self, response_id: str) -> ResponseRecord | None:
        """The row, hidden (deleted) ones too."""
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(sa.select(responses)
                                      .where(responses.c.id == response_id))).first()
        return None if row is None else ResponseRecord(**dict(row._mapping))

    async def chain(self, response_id: str, limit: int) -> list[ResponseRecord]:
        """``response_id`` and the responses it continued, newest first, back to the start of
        the conversation (or a row that holds its history); ``ChainTooLong`` past ``limit``."""
        r = responses
        start = (sa.select(r.c.id, r.c.previous_id, r.c.history.is_(None).label("walk"),
                           sa.literal_column("1").label("depth"))
                 .where(r.c.id == response_id).cte("chain", recursive=True))
        step = (sa.select(r.c.id, r.c.previous_id, r.c.history.is_(None),
                          start.c.depth + 1)
                .join(start, r.c.id == start.c.previous_id)
                .where(start.c.walk, start.c.depth <= limit))
        walk = start.union_all(step)
        query = (sa.select(r).join(walk, r.c.id == walk.c.id).order_by(walk.c.depth))
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        if len(rows) > limit:
            raise ChainTooLong(response_id)
        return [ResponseRecord(**dict(row._mapping)) for row in rows]

    async def set_response(self, response_id: str, response: JsonObject) -> None:
        async with self.db.engine.begin() as conn:
            old = (await conn.execute(sa.select(responses.c.response)
                                      .where(responses.c.id == response_id))).first()
            if old is None:
                return
            grown = document_bytes(response) - document_bytes(old.response)
            await conn.execute(sa.update(responses).where(responses.c.id == response_id)
                               .values(response=response,
                                       size_bytes=responses.c.size_bytes + grown))

    async def delete(self, response_id: str) -> bool:
        """Delete a response. One that later responses continue from is hidden instead (their
        conversations read it) and goes with the last of them; so do hidden predecessors."""
        async with self.db.engine.begin() as conn:
            row = (await conn.execute(sa.select(responses.c.previous_id, responses.c.deleted)
                                      .where(responses.c.id == response_id))).first()
            if row is None or row.deleted:
                return False
            if await _continued(conn, response_id):
                await conn.execute(sa.update(responses).where(responses.c.id == response_id)
                                   .values(deleted=True))
                return True
            await conn.execute(sa.delete(responses).where(responses.c.id == response_id))
            await release(conn, RESPONSE, [response_id])
            previous = row.previous_id
            while previous is not None:  # hidden predecessors no response continues any more
                up = (await conn.execute(sa.select(responses.c.previous_id, responses.c.deleted)
                                         .where(responses.c.id == previous))).first()
                if up is None or not up.deleted or await _continued(conn, previous):
                    break
                await conn.execute(sa.delete(responses).where(responses.c.id == previous))
                await release(conn, RESPONSE, [previous])
                previous = up.previous_id
        return True


async def _continued(conn: AsyncConnection, response_id: str) -> bool:
    found = (await conn.execute(sa.select(responses.c.id)
                                .where(responses.c.previous_id == response_id)
                                .limit(1))).first()
    return found is not None
