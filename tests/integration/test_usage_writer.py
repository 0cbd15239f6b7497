"""The usage recorder's batched writer on SQLite, PostgreSQL and MariaDB: batches of many rows
that read back as they were made, the spool's last seq kept in the batch's transaction, and a
dead process's spool replayed without writing a record twice."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from inferd.spool import Spool
from inferd.store.db import Database, unreachable
from inferd.store.tables_control import spool_marks, usage_records
from inferd.store.usage import UsageSink, UsageStore
from inferd.usage import UsageRecord, UsageRecorder
from tests.helpers import wait_for_async


def _record(i: int) -> UsageRecord:
    return UsageRecord(
        1_700_000_000.0 + i,
        f"req-{i}",
        str(i % 7),
        f"model-{i % 3}",
        "local:x" if i % 2 else None,
        "chat",
        bool(i % 2),
        200 + i % 3,
        None if i % 5 else "rate_limit_exceeded",
        i,
        2 * i,
        3 * i,
        0.25 * i,
        None if i % 4 else 1.5,
        None,
        i % 3 or None,
        None,
    )


async def _rows(database: Database) -> list[UsageRecord]:
    columns = [usage_records.c[name] for name in UsageRecord._fields]
    async with database.engine.connect() as conn:
        rows = (await conn.execute(sa.select(*columns).order_by(usage_records.c.id))).all()
    return [
        UsageRecord(
            *(
                bool(v) if name == "stream" else v
                for name, v in zip(UsageRecord._fields, row, strict=True)
            )
        )
        for row in rows
    ]


async def _marks(database: Database) -> dict[str, int]:
    async with database.engine.connect() as conn:
        rows = (await conn.execute(sa.select(spool_marks.c.spool, spool_marks.c.seq))).all()
    return {str(spool): int(seq) for spool, seq in rows}


def _recorder(database: Database, directory: Path, **options: float) -> UsageRecorder:
    return UsageRecorder(
        lambda: UsageSink.open(database.url), directory=directory, transient=unreachable, **options
    )  # type: ignore[arg-type]


async def test_batches_of_many_rows_read_back_as_made(database: Database, tmp_path: Path) -> None:
    recorder = _recorder(database, tmp_path, flush_seconds=3600, batch_size=1500)
    await recorder.start()
    made = [_record(i) for i in range(4000)]
    recorder.record_many(made)
    await recorder.flush()
    assert recorder.pending == 0 and recorder.written == 4000 and recorder.flushes == 3
    assert await _rows(database) == made  # every field, in order (SQLite: multi-row INSERTs)
    spool = recorder.spool_path
    assert spool is not None and await _marks(database) == {spool.stem: 4000}
    await recorder.close()
    assert await _marks(database) == {} and not spool.exists()


async def test_a_dead_process_spool_is_replayed_once(database: Database, tmp_path: Path) -> None:
    """A process killed after its first batch was committed, before its spool was emptied:
    the next start writes the rest, and only the rest."""
    made = [_record(i) for i in range(10)]
    dead = Spool.create(tmp_path)
    dead.append(1, [list(r) for r in made[:4]])
    dead.append(5, [list(r) for r in made[4:]])
    dead.close(remove=False)
    sink = await UsageSink.open(database.url)
    try:
        await sink.write(made[:4], dead.id, 4)  # the batch committed before the kill
    finally:
        await sink.close()
    recorder = _recorder(database, tmp_path)
    await recorder.start()
    await wait_for_async(lambda: _replayed(recorder, 6), what="the spool replayed")
    await recorder.flush()
    assert await _rows(database) == made
    assert not dead.path.exists() and dead.id not in await _marks(database)
    await recorder.close()
    assert await UsageStore(database).count() == 10


async def _replayed(recorder: UsageRecorder, count: int) -> bool:
    return recorder.replayed == count and not recorder.replaying
