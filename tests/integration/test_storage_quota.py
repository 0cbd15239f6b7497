"""Per-key storage quotas on every store (SQLite, PostgreSQL, MariaDB): files, pictures,
contexts and stored responses are counted in the transaction that stores them, refused past
the quota (413 for one object larger than the whole quota, 429 ``storage_quota_exceeded``
for the total), given back when deleted or expired, and exact under parallel stores."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest

from inferd.errors import PayloadTooLarge, RateLimited
from inferd.store.db import Database
from inferd.store.files import IMAGE_PURPOSE, FileRecord, FileStore
from inferd.store.jobs_contexts import ContextStore
from inferd.store.responses import ResponseRecord, ResponseStore
from inferd.store.storage import Quota, StorageStore, StorageUse


def _file(owner: str, size: int, *, purpose: str = "user_data",
          expires_at: float | None = None) -> tuple[FileRecord, bytes]:
    file_id = f"file-{uuid.uuid4().hex}"
    return (FileRecord(id=file_id, owner=owner, purpose=purpose, filename="f", bytes=size,
                       created_at=time.time(), expires_at=expires_at), b"x" * size)


async def _stored(files: FileStore, owner: str, size: int, quota: Quota | None,
                  **fields: Any) -> str | None:
    """The new file's id, or None when the quota refused it (429)."""
    record, content = _file(owner, size, **fields)
    try:
        await files.insert(record, content, quota)
    except RateLimited as exc:
        assert exc.code == "storage_quota_exceeded" and exc.status == 429
        return None
    return record.id


async def test_files_are_refused_past_the_object_quota_and_deleting_gives_room(
        database: Database) -> None:
    files, storage = FileStore(database), StorageStore(database)
    quota = Quota(bytes=0, objects=2)
    first = await _stored(files, "1", 10, quota)
    assert first is not None and await _stored(files, "1", 20, quota) is not None
    assert await _stored(files, "1", 1, quota) is None
    assert await storage.use("1") == StorageUse(bytes=30, objects=2)
    assert await _stored(files, "2", 1, quota) is not None  # another key has its own quota
    assert await files.delete(first)
    assert await storage.use("1") == StorageUse(bytes=20, objects=1)
    assert await _stored(files, "1", 1, quota) is not None


async def test_bytes_quota_refuses_the_total_with_429_and_one_too_large_object_with_413(
        database: Database) -> None:
    files, storage = FileStore(database), StorageStore(database)
    quota = Quota(bytes=100, objects=0)
    record, content = _file("1", 101)
    with pytest.raises(PayloadTooLarge) as too_large:
        await files.insert(record, content, quota)
    assert too_large.value.status == 413 and too_large.value.code == "object_too_large"
    assert "100 bytes" in too_large.value.message
    assert await _stored(files, "1", 60, quota) is not None
    assert await _stored(files, "1", 41, quota) is None  # 101 in all
    assert await _stored(files, "1", 40, quota) is not None  # exactly 100
    assert await storage.use("1") == StorageUse(bytes=100, objects=2)
    assert await files.get(record.id) is None  # nothing of a refused file is kept


async def test_parallel_uploads_of_one_key_get_exactly_its_quota(database: Database) -> None:
    files, storage = FileStore(database), StorageStore(database)
    quota = Quota(bytes=0, objects=5)
    stored = await asyncio.gather(*(_stored(files, "7", 100, quota) for _ in range(16)))
    kept = [file_id for file_id in stored if file_id is not None]
    assert len(kept) == 5
    page, _ = await files.page(owner="7", all_owners=False, purpose=None, after=None,
                               limit=100)
    assert sorted(r.id for r in page) == sorted(kept)
    assert await storage.use("7") == StorageUse(bytes=500, objects=5)


async def test_expired_files_and_pictures_give_their_storage_back(database: Database) -> None:
    files, storage = FileStore(database), StorageStore(database)
    past = time.time() - 10
    await _stored(files, "3", 7, None, expires_at=past)
    await _stored(files, "3", 9, None, purpose=IMAGE_PURPOSE, expires_at=past)
    kept = await _stored(files, "3", 5, None)
    assert await storage.use("3") == StorageUse(bytes=21, objects=3)
    assert await files.purge_expired() == 2
    assert await storage.use("3") == StorageUse(bytes=5, objects=1)
    assert kept is not None and await files.get(kept) is not None


async def test_contexts_count_their_bytes_and_are_refused_past_the_quota(
        database: Database) -> None:
    contexts, storage = ContextStore(database), StorageStore(database)
    quota = Quota(bytes=10, objects=0)
    await contexts.create("4", "héllo", quota)  # 6 bytes in UTF-8
    with pytest.raises(RateLimited) as refused:
        await contexts.create("4", "world", quota)
    assert refused.value.code == "storage_quota_exceeded"
    assert await storage.use("4") == StorageUse(bytes=6, objects=1)
    assert [c.content for c in await contexts.all("4", False)] == ["héllo"]


async def test_stored_responses_are_counted_and_room_is_checked_before_work(
        database: Database) -> None:
    responses, storage = ResponseStore(database), StorageStore(database)
    quota = Quota(bytes=0, objects=1)
    await storage.check_room("5", quota)  # empty: room for one
    record = ResponseRecord(id=f"resp_{uuid.uuid4().hex}", owner="5", model="echo",
                            created_at=time.time(), history=[{"role": "user", "content": "hi"}],
                            input_items=[], response={"id": "x"})
    await responses.insert(record)
    use = await storage.use("5")
    assert use.objects == 1 and use.bytes > 0
    with pytest.raises(RateLimited) as full:
        await storage.check_room("5", quota)
    assert full.value.code == "storage_quota_exceeded"
    with pytest.raises(PayloadTooLarge):
        await storage.check_room("5", Quota(bytes=10, objects=0), size=11)
    assert await responses.delete(record.id)
    assert await storage.use("5") == StorageUse(bytes=0, objects=0)
    await storage.check_room("5", quota)


async def test_the_caller_without_a_key_is_counted_too(database: Database) -> None:
    files, storage = FileStore(database), StorageStore(database)
    record, content = _file("", 3)
    record.owner = None
    await files.insert(record, content, Quota(bytes=0, objects=1))
    assert await storage.use(None) == StorageUse(bytes=3, objects=1)
    second, content = _file("", 3)
    second.owner = None
    with pytest.raises(RateLimited):
        await files.insert(second, content, Quota(bytes=0, objects=1))


async def test_a_conversation_counts_as_one_object_that_grows_with_its_items(
        database: Database) -> None:
    from inferd.store.conversations import ConversationRecord, ConversationStore

    conversations, storage = ConversationStore(database), StorageStore(database)
    quota = Quota(bytes=2000, objects=10)
    item = {"id": "msg_1", "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": "x" * 300}]}
    record = ConversationRecord("conv_quota", "7", time.time(), {})
    await conversations.create(record, [item], quota)
    created = await storage.use("7")
    assert created.objects == 1 and created.bytes > 300
    await conversations.add_items(record.id, [{**item, "id": "msg_2"}], quota)
    grown = await storage.use("7")
    assert grown.objects == 1 and grown.bytes > created.bytes + 300
    with pytest.raises(RateLimited) as refused:  # past the key's bytes: refused, not stored
        await conversations.add_items(record.id, [{**item, "id": f"msg_{i}"}
                                                  for i in range(3, 10)], quota)
    assert refused.value.code == "storage_quota_exceeded"
    assert await conversations.count(record.id) == 2 and await storage.use("7") == grown
    # a response's items, whose room was checked before it ran, are counted, never refused
    await conversations.add_items(record.id, [{**item, "id": "msg_out"}] * 5, None)
    assert (await storage.use("7")).bytes > quota.bytes
    await conversations.delete(record.id)  # everything it counted comes back
    assert await storage.use("7") == StorageUse(bytes=0, objects=0)
