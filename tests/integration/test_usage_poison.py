"""A usage record the database refuses is dropped alone: the records around it are written and
the recorder empties, on SQLite, PostgreSQL and MariaDB (whose columns refuse different
values); records the database cannot take while it is away wait for it."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa

from inferd.store.db import Database, unreachable
from inferd.store.tables_control import usage_records
from inferd.store.usage import UsageSink, UsageStore
from inferd.usage import UsageRecord, UsageRecorder
from tests.helpers import wait_for_async


def _record(request_id: str, model: str = "m") -> UsageRecord:
    return UsageRecord(time.time(), request_id, "1", model, None, "chat", False, 200, None,
                       1, 2, 3, 4.0, None, None, None)


async def test_a_refused_record_does_not_stop_metering(database: Database,
                                                      tmp_path: Path) -> None:
    recorder = UsageRecorder(lambda: UsageSink.open(database.url), directory=tmp_path,
                             transient=unreachable)
    await recorder.start()
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
    await recorder.close()  # nothing is retried
    assert recorder.pending == 0 and recorder.written == len(stored)


class Unreachable:
    """The usage sink of a database that is away until ``available``."""

    def __init__(self, sink: UsageSink) -> None:
        self.sink = sink
        self.available = False
        self.attempts: list[int] = []

    async def write(self, records: Sequence[UsageRecord], spool: str | None, last: int) -> None:
        self.attempts.append(len(records))
        if not self.available:
            raise ConnectionError("database restarting")
        await self.sink.write(records, spool, last)

    async def last(self, spool: str) -> int:
        return await self.sink.last(spool)

    async def forget(self, spool: str) -> None:
        await self.sink.forget(spool)

    async def close(self) -> None:
        await self.sink.close()


async def test_an_unreachable_store_keeps_the_records(database: Database,
                                                      tmp_path: Path) -> None:
    store = UsageStore(database)
    sinks: list[Unreachable] = []

    async def open_sink() -> Unreachable:
        sinks.append(Unreachable(await UsageSink.open(database.url)))
        return sinks[-1]

    recorder = UsageRecorder(open_sink, directory=tmp_path, transient=unreachable)
    await recorder.start()
    for i in range(3):
        recorder.record(_record(f"kept-{i}"))
    await recorder.flush()
    # one attempt for the whole batch, nothing dropped: all kept for the next try
    assert sinks[0].attempts == [3] and recorder.pending == 3 and recorder.rejected == 0
    sinks[0].available = True
    await wait_for_async(lambda: _written(recorder), what="the records written at a retry")
    await recorder.close()
    assert await store.count() == 3


async def _written(recorder: UsageRecorder) -> bool:
    return recorder.pending == 0
