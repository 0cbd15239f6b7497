"""Per-key storage quotas: the bytes and objects a key's stored files, contexts, responses and
pictures may take.

Every store of one of those objects calls ``reserve`` inside the transaction that writes it:
one conditional ``UPDATE`` adds the object to its key's row of ``storage_usage`` only if the
key stays within its quota, so parallel uploads of one key queue on that row and the quota is
exact on SQLite, PostgreSQL and MariaDB (the object and its count commit or roll back
together). Deleting an object calls ``release`` in the deleting transaction, which gives back
what ``reserve`` counted for it (``storage_objects``). Objects a key did not ask to store
(batch output files) and objects stored after their work was done (a response, a picture
answered by URL) are counted without being refused (``quota=None``): ``check_room`` refuses
such work before it starts.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from inferd.errors import PayloadTooLarge, RateLimited
from inferd.store.db import Database
from inferd.store.tables_storage import storage_objects, storage_usage

# What a refused store tells a client to wait: room comes back only when objects are deleted
# or expire.
RETRY_SECONDS = 3600.0

FILE, CONTEXT, RESPONSE, IMAGE = "file", "context", "response", "image"
CONVERSATION = "conversation"  # one object that grows with its items


@dataclass(frozen=True, slots=True)
class Quota:
    """A key's storage quota; 0 = no limit of that kind."""

    bytes: int
    objects: int


@dataclass(frozen=True, slots=True)
class StorageUse:
    """What a key stores now."""

    bytes: int
    objects: int


def _owner(owner: str | None) -> str:
    return owner or ""


def _too_large(size: int, quota: Quota) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"This object is {size} bytes: larger than this API key's whole storage quota of "
        f"{quota.bytes} bytes.", code="object_too_large")


def _exceeded(use: StorageUse, size: int, count: int, quota: Quota) -> RateLimited:
    if quota.objects and use.objects + count > quota.objects:
        what = f"{use.objects} of its {quota.objects} objects"
    else:
        what = f"{use.bytes} of its {quota.bytes} bytes ({size} more asked for)"
    return RateLimited(
        f"Storage quota of this API key exceeded: it stores {what}. Delete files, contexts, "
        "responses or images it no longer needs, or ask an administrator for a larger quota.",
        retry_after=RETRY_SECONDS, code="storage_quota_exceeded")


async def ensure_counter(db: Database, owner: str | None) -> None:
    """Make the key's ``storage_usage`` row, in a transaction of its own, before the first
    transaction that counts an object in it: a row made inside parallel storing transactions
    would make them deadlock on MariaDB (gap locks)."""
    key = _owner(owner)
    async with db.engine.connect() as conn:
        found = (await conn.execute(sa.select(storage_usage.c.owner)
                                    .where(storage_usage.c.owner == key))).first()
    if found is not None:
        return
    try:
        async with db.engine.begin() as conn:
            await conn.execute(sa.insert(storage_usage).values(
                owner=key, bytes=0, objects=0, updated_at=time.time()))
    except sa.exc.IntegrityError:
        pass  # made by a parallel store


async def reserve(conn: AsyncConnection, *, kind: str, object_id: str, owner: str | None,
                  size: int, quota: Quota | None) -> None:
    """Count a new object of ``size`` bytes in its key's storage, inside the transaction that
    stores it (after ``ensure_counter``). Raises 413 (``object_too_large``) for an object
    larger than the whole byte quota and 429 (``storage_quota_exceeded``) when the key's
    objects would pass its quota; ``quota=None`` counts without refusing."""
    key = _owner(owner)
    if quota is not None and quota.bytes and size > quota.bytes:
        raise _too_large(size, quota)
    where = [storage_usage.c.owner == key]
    if quota is not None and quota.bytes:
        where.append(storage_usage.c.bytes + size <= quota.bytes)
    if quota is not None and quota.objects:
        where.append(storage_usage.c.objects + 1 <= quota.objects)
    update = (sa.update(storage_usage).where(*where)
              .values(bytes=storage_usage.c.bytes + size,
                      objects=storage_usage.c.objects + 1, updated_at=time.time()))
    for _ in range(2):
        if (await conn.execute(update)).rowcount:
            break
        row = (await conn.execute(sa.select(storage_usage.c.bytes, storage_usage.c.objects)
                                  .where(storage_usage.c.owner == key))).first()
        if row is not None:
            assert quota is not None  # an unconditional update always finds the row
            raise _exceeded(StorageUse(int(row[0]), int(row[1])), size, 1, quota)
        try:  # the key's first object: its row, unless a parallel store just made it
            async with conn.begin_nested():
                await conn.execute(sa.insert(storage_usage).values(
                    owner=key, bytes=0, objects=0, updated_at=time.time()))
        except sa.exc.IntegrityError:
            pass
    await conn.execute(sa.insert(storage_objects).values(
        kind=kind, object_id=object_id, owner=key, bytes=size))


async def grow(conn: AsyncConnection, *, kind: str, object_id: str, size: int,
               quota: Quota | None) -> None:
    """Count ``size`` more bytes of an object counted already (a conversation's new items),
    inside the transaction that stores them; 429 (``storage_quota_exceeded``) when the key's
    bytes would pass its quota, ``quota=None`` counts without refusing. An object counted
    before quotas existed is not counted now either."""
    if size <= 0:
        return
    counted = (await conn.execute(sa.select(storage_objects.c.owner).where(
        storage_objects.c.kind == kind, storage_objects.c.object_id == object_id))).first()
    if counted is None:
        return
    key = str(counted.owner)
    where = [storage_usage.c.owner == key]
    if quota is not None and quota.bytes:
        where.append(storage_usage.c.bytes + size <= quota.bytes)
    result = await conn.execute(sa.update(storage_usage).where(*where).values(
        bytes=storage_usage.c.bytes + size, updated_at=time.time()))
    if not result.rowcount:
        row = (await conn.execute(sa.select(storage_usage.c.bytes, storage_usage.c.objects)
                                  .where(storage_usage.c.owner == key))).first()
        assert quota is not None and row is not None  # the object's key has its row
        raise _exceeded(StorageUse(int(row[0]), int(row[1])), size, 0, quota)
    await conn.execute(sa.update(storage_objects).where(
        storage_objects.c.kind == kind, storage_objects.c.object_id == object_id)
        .values(bytes=storage_objects.c.bytes + size))


async def release(conn: AsyncConnection, kind: str, object_ids: Collection[str]) -> None:
    """Give back what the objects counted, inside the transaction that deletes them (objects
    stored before quotas existed counted nothing and give back nothing)."""
    if not object_ids:
        return
    ids = list(object_ids)
    counted = (await conn.execute(
        sa.select(storage_objects.c.owner, sa.func.sum(storage_objects.c.bytes),
                  sa.func.count())
        .where(storage_objects.c.kind == kind, storage_objects.c.object_id.in_(ids))
        .group_by(storage_objects.c.owner))).all()
    if not counted:
        return
    await conn.execute(sa.delete(storage_objects).where(
        storage_objects.c.kind == kind, storage_objects.c.object_id.in_(ids)))
    now = time.time()
    for owner, size, count in counted:
        await conn.execute(sa.update(storage_usage).where(storage_usage.c.owner == owner)
                           .values(bytes=storage_usage.c.bytes - int(size or 0),
                                   objects=storage_usage.c.objects - int(count),
                                   updated_at=now))


class StorageStore:
    """Reads of the storage counters (the writes happen in the stores' own transactions)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def use(self, owner: str | None) -> StorageUse:
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(sa.select(storage_usage.c.bytes, storage_usage.c.objects)
                                      .where(storage_usage.c.owner == _owner(owner)))).first()
        return StorageUse(0, 0) if row is None else StorageUse(int(row[0]), int(row[1]))

    async def check_room(self, owner: str | None, quota: Quota, *, size: int = 0,
                         count: int = 1) -> None:
        """Refuse (413 or 429, as ``reserve`` would) work whose result will be stored when
        ``count`` more objects of ``size`` bytes in all would not fit the key's quota now."""
        if quota.bytes and size > quota.bytes:
            raise _too_large(size, quota)
        if not (quota.bytes or quota.objects):
            return
        use = await self.use(owner)
        if ((quota.bytes and use.bytes + size > quota.bytes)
                or (quota.objects and use.objects + count > quota.objects)):
            raise _exceeded(use, size, count, quota)
