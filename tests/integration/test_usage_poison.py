"""A usage record the database refuses is dropped alone: the records around it are written and
the buffer empties, on SQLite, PostgreSQL and MariaDB (whose columns refuse different
values)."""

from __future__ import annotations

import time

import sqlalchemy as sa

from inferd.store.db import Database, unreachable
from inferd.store.tables_control import usage_records
from inferd.store.usage import UsageStore
from inferd.usage import UsageRecord, UsageRecorder


def _record(request_id: str, model: str = "m") -> UsageRecord:
    return UsageRecord(time.time(), request_id, "1", model, None, "chat", False, 200, None,
                       1, 2, 3, 4.0, None, None, None)


async def test_a_refused_record_does_not_stop_metering(database: Database) -> None:
    store = UsageStore(database)
    recorder = UsageRecorder(store.insert_many, transient=unreachable)
    good = [_record(f"good-{i}") for i in range(10)]
    # what PostgreSQL refuses: a request id longer than its column, a NUL in a text column
    poison = [_record("r" * 200), _record("nul", model="bad\x00model")]
    for record in good[:5] + poison + good[5:]:
        recorder.record(record)
    await recorder.flush()
    assert recorder.pending == 0
    async with database.engine.connect() as conn:
        stored = (await conn.execute(sa.select(usage_records.c.request_id))).scalars().all()
    assert {r.request_id for r in good} <= set(stored)
    # every poison record was either stored (SQLite takes anything) or refused and counted
    assert recorder.rejected + len(stored) - len(good) == len(poison)
    assert recorder.written == len(stored)
    await recorder.flush()  # nothing is retried
    assert recorder.pending == 0 and recorder.written == len(stored)


async def test_an_unreachable_store_keeps_the_records(database: Database) -> None:
    store = UsageStore(database)
    attempts: list[int] = []
    available = False

    async def write(records: list[UsageRecord]) -> None:
        attempts.append(len(records))
        if not available:
            raise ConnectionError("database restarting")
        await store.insert_many(records)

    recorder = UsageRecorder(write, transient=unreachable)
    for i in range(3):
        recorder.record(_record(f"kept-{i}"))
    assert await recorder.flush() == 0
    # one attempt for the whole batch, nothing dropped: all kept for the next try
    assert attempts == [3] and recorder.pending == 3 and recorder.rejected == 0
    available = True
    assert await recorder.flush() == 3 and recorder.pending == 0
