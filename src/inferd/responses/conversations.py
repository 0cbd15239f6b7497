"""The Conversations API: a conversation is a durable list of items that responses read as
their context (``conversation`` on ``/v1/responses``) and append their input and output to.

A conversation belongs to the key that made it: any other key is told it does not exist.
"""

from __future__ import annotations

import time

from inferd.auth.principal import Principal
from inferd.errors import InvalidRequest, NotFound
from inferd.jsontypes import JsonObject
from inferd.schemas.responses import (
    ConversationCreate,
    ConversationItemsCreate,
    ConversationObject,
    Deleted,
    Item,
    ItemPage,
    item_page,
    items_to_messages,
    new_id,
)
from inferd.store.conversations import ConversationRecord, ConversationStore
from inferd.store.storage import Quota

ITEM_PREFIX = {"message": "msg", "function_call": "fc", "function_call_output": "fco",
               "reasoning": "rs"}


def stored_items(items: list[Item], param: str = "items") -> list[Item]:
    """Items as a conversation keeps and lists them: checked (the kinds a chat model can
    read), each with an id and a status, message content as a list of parts."""
    items_to_messages(items, param)
    out: list[Item] = []
    for i, given in enumerate(items):
        item: Item = {"type": "message", **given}
        kind = str(item["type"])
        if item.get("id") is None:
            item["id"] = new_id(ITEM_PREFIX.get(kind, "item"))
        item_id = item["id"]
        if not isinstance(item_id, str) or not 0 < len(item_id) <= 64:
            raise InvalidRequest("An item id is a string of 1 to 64 characters.",
                                 param=f"{param}[{i}].id")
        content = item.get("content")
        if kind == "message" and isinstance(content, str):
            part: JsonObject
            if item.get("role") == "assistant":
                part = {"type": "output_text", "text": content, "annotations": []}
            else:
                part = {"type": "input_text", "text": content}
            item["content"] = [part]
        item.setdefault("status", "completed")
        out.append(item)
    return out


def conversation_object(record: ConversationRecord) -> ConversationObject:
    return {"id": record.id, "object": "conversation", "created_at": int(record.created_at),
            "metadata": record.metadata}


class ConversationService:
    """Everything the ``/v1/conversations`` routes do."""

    def __init__(self, store: ConversationStore, max_items: int) -> None:
        self.store = store
        self.max_items = max_items

    async def own(self, principal: Principal, conversation_id: str,
                  param: str = "conversation_id") -> ConversationRecord:
        record = await self.store.get(conversation_id)
        if record is None or record.owner != principal.key_id:
            raise NotFound(f"No conversation with id '{conversation_id}'.", param=param,
                           code="conversation_not_found")
        return record

    async def create(self, principal: Principal, body: ConversationCreate) -> ConversationObject:
        items = stored_items(body.items or [])
        record = ConversationRecord(new_id("conv"), principal.key_id, time.time(),
                                    dict(body.metadata or {}))
        await self.store.create(record, items, principal.storage_quota)
        return conversation_object(record)

    async def retrieve(self, principal: Principal, conversation_id: str) -> ConversationObject:
        return conversation_object(await self.own(principal, conversation_id))

    async def update(self, principal: Principal, conversation_id: str,
                     metadata: dict[str, str]) -> ConversationObject:
        record = await self.own(principal, conversation_id)
        await self.store.set_metadata(record.id, dict(metadata))
        record.metadata = dict(metadata)
        return conversation_object(record)

    async def delete(self, principal: Principal, conversation_id: str) -> Deleted:
        record = await self.own(principal, conversation_id)
        await self.store.delete(record.id)
        return {"id": record.id, "object": "conversation.deleted", "deleted": True}

    async def check_room(self, conversation_id: str, adding: int,
                         param: str = "conversation") -> None:
        """400 unless the conversation can take ``adding`` more items (a response checks
        for its input and one output item before it runs)."""
        if await self.store.count(conversation_id) + adding > self.max_items:
            raise InvalidRequest(f"A conversation holds at most {self.max_items} items "
                                 "(INFERD_CONVERSATION_MAX_ITEMS); start a new one.",
                                 param=param, code="conversation_too_long")

    async def append(self, record: ConversationRecord, items: list[Item],
                     quota: Quota | None) -> list[Item]:
        """Add items (already checked) unless the conversation would hold too many, or the
        key's storage (``quota``) would pass its quota."""
        await self.check_room(record.id, len(items), "items")
        await self.store.add_items(record.id, items, quota)
        return items

    async def add_items(self, principal: Principal, conversation_id: str,
                        body: ConversationItemsCreate) -> ItemPage:
        record = await self.own(principal, conversation_id)
        items = await self.append(record, stored_items(body.items), principal.storage_quota)
        return item_page(items, False)

    async def list_items(self, principal: Principal, conversation_id: str, *, limit: int,
                         order: str, after: str | None) -> ItemPage:
        record = await self.own(principal, conversation_id)
        items, more = await self.store.page(record.id, limit=limit,
                                            descending=order == "desc", after=after)
        return item_page(items, more)

    async def get_item(self, principal: Principal, conversation_id: str,
                       item_id: str) -> Item:
        record = await self.own(principal, conversation_id)
        item = await self.store.item(record.id, item_id)
        if item is None:
            raise NotFound(f"No item with id '{item_id}' in this conversation.",
                           param="item_id", code="item_not_found")
        return item

    async def delete_item(self, principal: Principal, conversation_id: str,
                          item_id: str) -> ConversationObject:
        """Remove an item; answers the conversation, as OpenAI does."""
        record = await self.own(principal, conversation_id)
        if not await self.store.delete_item(record.id, item_id):
            raise NotFound(f"No item with id '{item_id}' in this conversation.",
                           param="item_id", code="item_not_found")
        return conversation_object(record)

