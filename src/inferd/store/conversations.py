"""All SQL on conversations (the Conversations API) and prompt templates."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TypedDict

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from inferd.jsontypes import JsonObject
from inferd.store.db import Database
from inferd.store.storage import CONVERSATION, Quota, ensure_counter, grow, release, reserve
from inferd.store.tables_responses import (
    conversation_items,
    conversations,
    prompt_versions,
    prompts,
)


@dataclass
class ConversationRecord:
    id: str
    owner: str | None
    created_at: float
    metadata: dict[str, str]


class ConversationStore:
    """Conversations and their items, in the order they were added."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, record: ConversationRecord, items: list[JsonObject],
                     quota: Quota | None) -> None:
        """Store a conversation, counted in its key's storage as one object that grows with
        its items (``quota``: 413/429 past the key's quota; None counts without refusing)."""
        await ensure_counter(self.db, record.owner)
        async with self.db.engine.begin() as conn:
            await reserve(conn, kind=CONVERSATION, object_id=record.id, owner=record.owner,
                          size=len(orjson.dumps([record.metadata, items])), quota=quota)
            await conn.execute(sa.insert(conversations).values(
                id=record.id, owner=record.owner, created_at=record.created_at,
                metadata=record.metadata))
            await _add_items(conn, record.id, items)

    async def get(self, conversation_id: str) -> ConversationRecord | None:
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(sa.select(conversations).where(
                conversations.c.id == conversation_id))).first()
        return None if row is None else ConversationRecord(**dict(row._mapping))

    async def set_metadata(self, conversation_id: str, metadata: dict[str, str]) -> None:
        async with self.db.engine.begin() as conn:
            await conn.execute(sa.update(conversations)
                               .where(conversations.c.id == conversation_id)
                               .values(metadata=metadata))

    async def delete(self, conversation_id: str) -> None:
        async with self.db.engine.begin() as conn:
            await conn.execute(sa.delete(conversation_items).where(
                conversation_items.c.conversation_id == conversation_id))
            await conn.execute(sa.delete(conversations)
                               .where(conversations.c.id == conversation_id))
            await release(conn, CONVERSATION, [conversation_id])

    async def count(self, conversation_id: str) -> int:
        async with self.db.engine.connect() as conn:
            value = (await conn.execute(sa.select(sa.func.count()).where(
                conversation_items.c.conversation_id == conversation_id))).scalar()
        return int(value or 0)

    async def add_items(self, conversation_id: str, items: list[JsonObject],
                        quota: Quota | None = None) -> None:
        """Add items, their bytes counted in the conversation's (and its key's) storage
        (``quota``: 429 past the key's quota; None, for a response's items whose room was
        checked before it ran, counts without refusing); an item deleted later gives its
        bytes back with its conversation."""
        async with self.db.engine.begin() as conn:
            await grow(conn, kind=CONVERSATION, object_id=conversation_id,
                       size=len(orjson.dumps(items)), quota=quota)
            await _add_items(conn, conversation_id, items)

    async def items(self, conversation_id: str) -> list[JsonObject]:
        """Every item, oldest first."""
        async with self.db.engine.connect() as conn:
            rows = await conn.execute(sa.select(conversation_items.c.item).where(
                conversation_items.c.conversation_id == conversation_id)
                .order_by(conversation_items.c.seq))
            return [dict(item) for (item,) in rows]

    async def page(self, conversation_id: str, *, limit: int, descending: bool,
                   after: str | None) -> tuple[list[JsonObject], bool]:
        """One page of items (and whether more follow) after the item ``after``."""
        c = conversation_items.c
        query = sa.select(c.item).where(c.conversation_id == conversation_id)
        async with self.db.engine.connect() as conn:
            if after is not None:
                seq = (await conn.execute(sa.select(c.seq).where(
                    c.conversation_id == conversation_id, c.item_id == after)
                    .order_by(c.seq.desc()).limit(1))).scalar()
                if seq is None:
                    return [], False
                query = query.where(c.seq < seq if descending else c.seq > seq)
            query = query.order_by(c.seq.desc() if descending else c.seq).limit(limit + 1)
            found = [dict(item) for (item,) in await conn.execute(query)]
        return found[:limit], len(found) > limit

    async def item(self, conversation_id: str, item_id: str) -> JsonObject | None:
        c = conversation_items.c
        async with self.db.engine.connect() as conn:
            value = (await conn.execute(sa.select(c.item).where(
                c.conversation_id == conversation_id, c.item_id == item_id)
                .order_by(c.seq.desc()).limit(1))).scalar()
        return None if value is None else dict(value)

    async def delete_item(self, conversation_id: str, item_id: str) -> bool:
        c = conversation_items.c
        async with self.db.engine.begin() as conn:
            result = await conn.execute(sa.delete(conversation_items).where(
                c.conversation_id == conversation_id, c.item_id == item_id))
        return bool(result.rowcount)


async def _add_items(conn: AsyncConnection, conversation_id: str,
                     items: list[JsonObject]) -> None:
    if items:
        now = time.time()
        await conn.execute(sa.insert(conversation_items), [
            {"conversation_id": conversation_id, "item_id": item["id"], "item": item,
             "created_at": now} for item in items])


class Template(TypedDict, total=False):
    """A prompt template's version as stored: its instructions and input items."""

    instructions: str
    input: list[JsonObject]


@dataclass
class PromptRecord:
    id: str
    owner: str | None
    name: str
    created_at: float
    latest_version: int


class PromptStore:
    """Prompt templates; each change is a new version, the old ones stay usable."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, record: PromptRecord, template: Template) -> None:
        async with self.db.engine.begin() as conn:
            await conn.execute(sa.insert(prompts).values(
                id=record.id, owner=record.owner, name=record.name,
                created_at=record.created_at, latest_version=1))
            await conn.execute(sa.insert(prompt_versions).values(
                prompt_id=record.id, version=1, template=template,
                created_at=record.created_at))

    async def get(self, prompt_id: str) -> PromptRecord | None:
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(sa.select(prompts)
                                      .where(prompts.c.id == prompt_id))).first()
        return None if row is None else PromptRecord(**dict(row._mapping))

    async def latest(self, limit: int) -> list[PromptRecord]:
        async with self.db.engine.connect() as conn:
            rows = await conn.execute(sa.select(prompts).order_by(prompts.c.created_at.desc(),
                                                                   prompts.c.id).limit(limit))
            return [PromptRecord(**dict(row._mapping)) for row in rows]

    async def add_version(self, prompt_id: str, template: Template) -> int | None:
        """The new version's number (None: no such prompt)."""
        async with self.db.engine.begin() as conn:
            latest = (await conn.execute(sa.select(prompts.c.latest_version)
                                         .where(prompts.c.id == prompt_id)
                                         .with_for_update())).scalar()
            if latest is None:
                return None
            version = int(latest) + 1
            await conn.execute(sa.insert(prompt_versions).values(
                prompt_id=prompt_id, version=version, template=template,
                created_at=time.time()))
            await conn.execute(sa.update(prompts).where(prompts.c.id == prompt_id)
                               .values(latest_version=version))
        return version

    async def versions(self, prompt_id: str) -> list[tuple[int, Template, float]]:
        async with self.db.engine.connect() as conn:
            rows = await conn.execute(
                sa.select(prompt_versions.c.version, prompt_versions.c.template,
                          prompt_versions.c.created_at)
                .where(prompt_versions.c.prompt_id == prompt_id)
                .order_by(prompt_versions.c.version))
            return [(int(v), t, float(c)) for v, t, c in rows]

    async def version(self, prompt_id: str, version: int) -> Template | None:
        async with self.db.engine.connect() as conn:
            template: Template | None = (await conn.execute(
                sa.select(prompt_versions.c.template).where(
                    prompt_versions.c.prompt_id == prompt_id,
                    prompt_versions.c.version == version))).scalar()
        return template

    async def delete(self, prompt_id: str) -> bool:
        async with self.db.engine.begin() as conn:
            await conn.execute(sa.delete(prompt_versions)
                               .where(prompt_versions.c.prompt_id == prompt_id))
            result = await conn.execute(sa.delete(prompts).where(prompts.c.id == prompt_id))
        return bool(result.rowcount)
