"""Batch repository (``batches``); a batch's requests are jobs with its ``batch_id``."""

from __future__ import annotations

import time
from dataclasses import dataclass, fields
from typing import Any

import sqlalchemy as sa

from inferd.jsontypes import JsonObject
from inferd.store.db import Database
from inferd.store.files import FileRecord, FileStore
from inferd.store.jobs import JobRecord, JobStore
from inferd.store.storage import ensure_counter
from inferd.store.tables_jobs import batches, jobs


@dataclass
class BatchRecord:
    """One row of ``batches``."""

    id: str
    owner: str | None
    endpoint: str
    input_file_id: str
    completion_window: str
    status: str
    total: int
    created_at: float
    output_file_id: str | None = None
    error_file_id: str | None = None
    meta: JsonObject | None = None  # the client's ``metadata``
    in_progress_at: float | None = None
    expires_at: float | None = None
    finalizing_at: float | None = None
    completed_at: float | None = None
    cancelling_at: float | None = None
    cancelled_at: float | None = None

    def values(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class BatchStore:
    """All SQL on batches."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, batch: BatchRecord, records: list[JobRecord]) -> None:
        """The batch and all its jobs in one transaction: nothing half-created."""
        async with self.db.engine.begin() as conn:
            await conn.execute(sa.insert(batches).values(**batch.values()))
            await JobStore.insert_many(conn, records)

    async def get(self, batch_id: str) -> BatchRecord | None:
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(sa.select(batches).where(batches.c.id == batch_id))).first()
        return None if row is None else BatchRecord(**dict(row._mapping))

    async def page(self, *, owner: str | None, all_owners: bool, after: str | None,
                   limit: int) -> tuple[list[BatchRecord], bool]:
        query: Any = sa.select(batches).order_by(batches.c.id.desc()).limit(limit + 1)
        if not all_owners:
            query = query.where(batches.c.owner.is_(None) if owner is None
                                else batches.c.owner == owner)
        if after:
            query = query.where(batches.c.id < after)
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [BatchRecord(**dict(r._mapping)) for r in rows[:limit]], len(rows) > limit

    async def mark_cancelling(self, batch_id: str) -> bool:
        async with self.db.engine.begin() as conn:
            result = await conn.execute(
                sa.update(batches).where(batches.c.id == batch_id,
                                         batches.c.status.in_(("validating", "in_progress")))
                .values(status="cancelling", cancelling_at=time.time()))
        return bool(result.rowcount == 1)

    async def unfinished(self) -> list[str]:
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(sa.select(batches.c.id).where(
                batches.c.status.in_(("in_progress", "cancelling"))))).all()
        return [str(r[0]) for r in rows]

    async def finalize(self, batch_id: str, outputs: list[tuple[FileRecord, bytes]],
                       output_file_id: str | None, error_file_id: str | None) -> bool:
        """Move the batch to its final state and store its output files, atomically and once.

        The status update comes first so that the transaction takes the write lock at once
        and a concurrent finalizer finds nothing to do.
        """
        now = time.time()
        final = sa.case((batches.c.status == "cancelling", "cancelled"), else_="completed")
        for record, _ in outputs[:1]:  # one owner: the batch's
            await ensure_counter(self.db, record.owner)
        async with self.db.engine.begin() as conn:
            result = await conn.execute(
                sa.update(batches).where(batches.c.id == batch_id,
                                         batches.c.status.in_(("in_progress", "cancelling")))
                .values(finalizing_at=now, output_file_id=output_file_id,
                        error_file_id=error_file_id,
                        completed_at=sa.case((batches.c.status == "cancelling", None),
                                             else_=now),
                        cancelled_at=sa.case((batches.c.status == "cancelling", now),
                                             else_=None),
                        status=final))
            if result.rowcount != 1:
                await conn.rollback()
                return False
            for record, content in outputs:
                await FileStore.insert_in(conn, record, content)
        return True

    async def purge_finished(self, before: float) -> list[BatchRecord]:
        """Delete finished batches older than ``before`` with their jobs; returns them."""
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(sa.select(batches).where(
                batches.c.status.in_(("completed", "cancelled", "failed", "expired")),
                sa.func.coalesce(batches.c.completed_at, batches.c.cancelled_at,
                                 batches.c.created_at) < before))).all()
        found = [BatchRecord(**dict(r._mapping)) for r in rows]
        store = JobStore(self.db)
        for batch in found:
            async with self.db.engine.connect() as conn:
                ids = [str(r[0]) for r in (await conn.execute(
                    sa.select(jobs.c.id).where(jobs.c.batch_id == batch.id))).all()]
            for start in range(0, len(ids), 500):
                await store.delete_many(ids[start:start + 500])
            async with self.db.engine.begin() as conn:
                await conn.execute(sa.delete(batches).where(batches.c.id == batch.id))
        return found
