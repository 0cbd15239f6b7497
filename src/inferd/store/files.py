"""File repository (``files`` + ``file_parts``): uploaded batch inputs and batch outputs."""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from inferd.store.db import Database
from inferd.store.storage import FILE, IMAGE, Quota, ensure_counter, release, reserve
from inferd.store.tables_jobs import FILE_PART_BYTES, file_parts, files

# Pictures answered by URL: served by ``/v1/images/{id}/content`` to their key only, never
# listed or read through the files API.
IMAGE_PURPOSE = "image"


@dataclass
class FileRecord:
    """One stored file (its bytes live in ``file_parts``)."""

    id: str
    owner: str | None
    purpose: str
    filename: str
    bytes: int
    created_at: float
    lines: int | None = None
    expires_at: float | None = None


class FileStore:
    """All SQL on files."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @staticmethod
    async def insert_in(conn: AsyncConnection, record: FileRecord, content: bytes,
                        quota: Quota | None = None) -> None:
        """Insert a file and its bytes inside the caller's transaction, counted in its owner's
        storage: refused past ``quota`` (413 or 429), always counted when None."""
        await reserve(conn, kind=IMAGE if record.purpose == IMAGE_PURPOSE else FILE,
                      object_id=record.id, owner=record.owner, size=len(content), quota=quota)
        await conn.execute(sa.insert(files).values(
            id=record.id, owner=record.owner, purpose=record.purpose, filename=record.filename,
            bytes=record.bytes, lines=record.lines, created_at=record.created_at,
            expires_at=record.expires_at))
        for part, start in enumerate(range(0, max(len(content), 1), FILE_PART_BYTES)):
            await conn.execute(sa.insert(file_parts).values(
                file_id=record.id, part=part,
                data=base64.b64encode(content[start:start + FILE_PART_BYTES]).decode()))

    async def insert(self, record: FileRecord, content: bytes,
                     quota: Quota | None = None) -> None:
        await ensure_counter(self.db, record.owner)
        async with self.db.engine.begin() as conn:
            await self.insert_in(conn, record, content, quota)

    async def get(self, file_id: str) -> FileRecord | None:
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(sa.select(files).where(files.c.id == file_id))).first()
        return None if row is None else FileRecord(**dict(row._mapping))

    async def content(self, file_id: str) -> bytes:
        query = (sa.select(file_parts.c.data).where(file_parts.c.file_id == file_id)
                 .order_by(file_parts.c.part))
        async with self.db.engine.connect() as conn:
            return b"".join(base64.b64decode(r[0]) for r in (await conn.execute(query)).all())

    async def page(self, *, owner: str | None, all_owners: bool, purpose: str | None,
                   after: str | None, limit: int) -> tuple[list[FileRecord], bool]:
        query: Any = sa.select(files).order_by(files.c.id.desc()).limit(limit + 1)
        if not all_owners:
            query = query.where(files.c.owner.is_(None) if owner is None
                                else files.c.owner == owner)
        query = query.where(files.c.purpose != IMAGE_PURPOSE)
        if purpose:
            query = query.where(files.c.purpose == purpose)
        if after:
            query = query.where(files.c.id < after)
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [FileRecord(**dict(r._mapping)) for r in rows[:limit]], len(rows) > limit

    async def delete(self, file_id: str) -> bool:
        async with self.db.engine.begin() as conn:
            deleted = await conn.execute(sa.delete(files).where(files.c.id == file_id))
            await conn.execute(sa.delete(file_parts).where(file_parts.c.file_id == file_id))
            for kind in (FILE, IMAGE):
                await release(conn, kind, [file_id])
        return bool(deleted.rowcount == 1)

    async def purge_expired(self, before: float | None = None) -> int:
        now = before or time.time()
        async with self.db.engine.connect() as conn:
            ids = [str(r[0]) for r in (await conn.execute(
                sa.select(files.c.id).where(files.c.expires_at < now))).all()]
        for file_id in ids:
            await self.delete(file_id)
        return len(ids)
