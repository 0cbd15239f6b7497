"""Stored responses on SQLite, PostgreSQL and MariaDB: each row stores what its response added
and a chain is read back by walking it; rows stored whole before revision 0010 stay readable
(rewritten to point at their predecessor when it is stored); a deleted response that later
ones continue from stays hidden until the last of them goes."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import sqlalchemy as sa

from inferd.responses.conversations import ConversationService
from inferd.responses.prompts import PromptService
from inferd.responses.service import ResponseService
from inferd.store.conversations import ConversationStore, PromptStore
from inferd.store.db import Database, downgrade, upgrade
from inferd.store.responses import (
    ChainTooLong,
    ResponseRecord,
    ResponseStore,
    document_bytes,
    stored_bytes,
)
from inferd.store.tables_responses import responses

OWNER = "7"


def user(text: str, n: int) -> dict[str, Any]:
    return {"id": f"msg_in{n}", "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": text}]}


def answer(response_id: str, n: int, previous: str | None) -> dict[str, Any]:
    return {"id": response_id, "object": "response", "status": "completed",
            "previous_response_id": previous,
            "output": [{"id": f"msg_out{n}", "type": "message", "role": "assistant",
                        "status": "completed",
                        "content": [{"type": "output_text", "text": f"answer {n}",
                                     "annotations": []}]}]}


def service(db: Database, max_chain: int = 100) -> ResponseService:
    conversations = ConversationService(ConversationStore(db), 100)
    return ResponseService(None, ResponseStore(db), None,  # type: ignore[arg-type]
                           conversations, PromptService(PromptStore(db)), max_chain)


async def store_chain(store: ResponseStore, turns: int, text: str) -> list[str]:
    ids: list[str] = []
    for n in range(turns):
        previous = ids[-1] if ids else None
        ids.append(f"resp_{n:04d}")
        await store.insert(ResponseRecord(ids[-1], OWNER, "m", time.time(), [user(text, n)],
                                          response=answer(ids[-1], n, previous),
                                          previous_id=previous))
    return ids


def expected_history(turns: int, text: str) -> list[dict[str, Any]]:
    history: list[dict[str, Any]] = []
    for n in range(turns):
        history += [user(text, n), *answer("x", n, None)["output"]]
    return history


async def test_a_chain_stores_each_turn_once_and_reads_back_whole(database: Database) -> None:
    store, text = ResponseStore(database), "x" * 2000
    ids = await store_chain(store, 30, text)
    async with database.engine.connect() as conn:
        sizes = dict((await conn.execute(sa.select(responses.c.id,
                                                   responses.c.size_bytes))).all())
    turn = document_bytes([user(text, 0)])
    for response_id in ids:  # each row: its own input and answer, not the turns before it
        record = await store.get(response_id)
        assert record is not None and sizes[response_id] == stored_bytes(record)
        assert turn < sizes[response_id] < 2 * turn
    principal = type("P", (), {"key_id": OWNER})()
    history = await service(database).history(principal, ids[-1])  # type: ignore[arg-type]
    assert history == expected_history(30, text)
    assert [r.id for r in await store.chain(ids[-1], 30)] == ids[::-1]
    with pytest.raises(ChainTooLong):
        await store.chain(ids[-1], 29)


async def test_set_response_keeps_the_size_current(database: Database) -> None:
    store = ResponseStore(database)
    await store.insert(ResponseRecord("resp_bg", OWNER, "m", time.time(), [user("hi", 0)],
                                      response={"id": "resp_bg", "status": "queued",
                                                "output": []}))
    await store.set_response("resp_bg", answer("resp_bg", 0, None) | {"more": "y" * 500})
    record = await store.get("resp_bg")
    assert record is not None and record.size_bytes == stored_bytes(record)


async def test_a_deleted_response_stays_for_the_ones_that_continue_it(
        database: Database) -> None:
    store = ResponseStore(database)
    ids = await store_chain(store, 3, "hello")
    assert await store.delete(ids[1])  # resp 2 continues it: hidden, still read by the walk
    hidden = await store.get(ids[1])
    assert hidden is not None and hidden.deleted
    principal = type("P", (), {"key_id": OWNER})()
    history = await service(database).history(principal, ids[2])  # type: ignore[arg-type]
    assert history == expected_history(3, "hello")
    assert await store.delete(ids[2])  # the last one continuing it: both go
    assert await store.get(ids[2]) is None and await store.get(ids[1]) is None
    assert await store.get(ids[0]) is not None


async def test_rows_stored_whole_before_0010_stay_readable(database: Database) -> None:
    await database.close()
    await asyncio.to_thread(downgrade, database.url, "0009")
    legacy = sa.table("responses", *(sa.column(name) for name in (
        "id", "owner", "model", "created_at", "job_id")),
        sa.column("history", sa.JSON), sa.column("input_items", sa.JSON),
        sa.column("response", sa.JSON))
    history: list[dict[str, Any]] = []
    rows = []
    for n in range(4):
        previous = f"resp_{n - 1:04d}" if n else None
        history = [*history, user("old", n)]
        rows.append({"id": f"resp_{n:04d}", "owner": OWNER, "model": "m",
                     "created_at": time.time() + n, "job_id": None, "history": list(history),
                     "input_items": [user("old", n)],
                     "response": answer(f"resp_{n:04d}", n, previous)})
        history = history + answer("x", n, None)["output"]
    rows[3]["response"]["previous_response_id"] = "resp_gone"  # its predecessor is not kept
    rows[3]["history"] = [*expected_history(3, "old"), user("old", 3)]
    before = Database(database.url)
    try:
        async with before.engine.begin() as conn:
            await conn.execute(sa.insert(legacy), rows)
    finally:
        await before.close()
    await asyncio.to_thread(upgrade, database.url)
    db = Database(database.url)
    try:
        store = ResponseStore(db)
        principal = type("P", (), {"key_id": OWNER})()
        for n in range(4):
            record = await store.get(f"resp_{n:04d}")
            assert record is not None and record.size_bytes == stored_bytes(record)
            assert (record.history is None) == (n in (1, 2))  # pointed at their predecessor
            got = await service(db).history(principal, record.id)  # type: ignore[arg-type]
            assert got == expected_history(n + 1, "old")
        await store.insert(ResponseRecord("resp_new", OWNER, "m", time.time(),
                                          [user("new", 4)],
                                          response=answer("resp_new", 4, "resp_0003"),
                                          previous_id="resp_0003"))
        got = await service(db).history(principal, "resp_new")  # type: ignore[arg-type]
        assert got == [*expected_history(4, "old"), user("new", 4), *answer("x", 4, None)["output"]]
        await db.close()
        await asyncio.to_thread(downgrade, db.url, "0009")  # and back: whole histories again
        db = Database(database.url)
        async with db.engine.connect() as conn:
            kept = dict((await conn.execute(sa.select(legacy.c.id, legacy.c.history))).all())
        assert kept["resp_new"] == [*expected_history(4, "old"), user("new", 4)]
    finally:
        await db.close()
