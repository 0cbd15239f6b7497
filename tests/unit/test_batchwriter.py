"""The batched, spooled writer: batches sized by the backlog, pending counted until written,
retries while the store is away, refused records set apart, memory bounded, spools of dead
writers replayed once."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from inferd import batchwriter
from inferd.batchwriter import SpooledWriter
from inferd.spool import Spool
from tests.helpers import wait_for_async
from tests.memory_sink import MemorySink, opener


def writer(sink: MemorySink, directory: Path | None, **options: Any) -> SpooledWriter[Any]:
    options.setdefault("flush_seconds", 3600)
    options.setdefault("retry_seconds", 0.01)
    options.setdefault("transient", lambda exc: isinstance(exc, ConnectionError))
    return SpooledWriter(opener(sink), decode=tuple, directory=directory, **options)


def rows(start: int, stop: int) -> list[tuple[int, str]]:
    return [(i, f"r{i}") for i in range(start, stop)]


def spooled(path: Path | None) -> int:
    return os.path.getsize(path) if path is not None and path.exists() else 0


async def test_records_are_spooled_at_once_and_written_in_batches(tmp_path: Path) -> None:
    sink = MemorySink()
    w = writer(sink, tmp_path, batch_size=1000)
    await w.start()
    w.record_many(rows(0, 400))
    await wait_for_async(
        lambda: _true(w.queued == 0 and spooled(w.spool_path) > 0), what="the records spooled"
    )
    assert sink.records == [] and w.pending == 400  # in the spool, not yet written
    for record in rows(400, 2500):
        w.record(record)
    await w.flush()
    assert w.pending == 0 and w.written == 2500
    assert [tuple(r) for r in sink.records] == rows(0, 2500)  # in order, each once
    assert max(sink.batches) <= 1000
    path = w.spool_path
    assert path is not None and sink.marks[path.stem] == 2500
    await w.close()
    assert not path.exists() and sink.marks == {}  # a clean stop leaves nothing behind


async def test_a_full_batch_is_written_without_waiting_for_the_interval(tmp_path: Path) -> None:
    sink = MemorySink()
    w = writer(sink, tmp_path, batch_size=100)
    await w.start()
    w.record_many(rows(0, 250))
    await wait_for_async(lambda: _true(len(sink.records) >= 200), what="full batches written")
    await w.close()
    assert [tuple(r) for r in sink.records] == rows(0, 250)


async def test_records_being_written_are_pending_until_the_write_ends(tmp_path: Path) -> None:
    sink = MemorySink()
    sink.gate = gate = threading.Event()
    w = writer(sink, tmp_path)
    await w.start()
    w.record_many(rows(0, 5))
    flush = asyncio.create_task(w.flush())
    await asyncio.to_thread(sink.entered.wait)
    w.record((5, "r5"))
    assert w.pending == 6  # five being written, one queued
    gate.set()
    await flush
    assert w.pending <= 1 and len(sink.records) >= 5
    await w.close()
    assert w.pending == 0 and len(sink.records) == 6


async def test_records_wait_in_the_spool_while_the_store_is_away(tmp_path: Path) -> None:
    sink = MemorySink(away=3)
    w = writer(sink, tmp_path, batch_size=50)
    await w.start()
    w.record_many(rows(0, 120))
    await w.flush()  # returns after a failed try: the store is away
    assert w.failures >= 1
    await wait_for_async(lambda: _true(w.pending == 0), what="the records written")
    assert [tuple(r) for r in sink.records] == rows(0, 120)  # each once, in order
    await w.close()


async def test_a_refused_record_is_dropped_and_the_others_written(tmp_path: Path) -> None:
    sink = MemorySink(refuse=lambda r: r[0] in (3, 77))
    w = writer(sink, tmp_path)
    await w.start()
    w.record_many(rows(0, 100))
    await w.flush()
    assert w.rejected == 2 and w.written == 98 and w.pending == 0
    assert [r[0] for r in sink.records] == [i for i in range(100) if i not in (3, 77)]
    await w.close()


async def test_memory_is_bounded_while_the_store_lags(tmp_path: Path) -> None:
    """Beyond ``max_pending`` records the thread holds, the rest stay in the spool file and
    are read back from it when the store catches up."""
    sink = MemorySink(away=10**9)
    w = writer(sink, tmp_path, batch_size=500, max_pending=1000, retry_seconds=3600)
    await w.start()
    for start in range(0, 5000, 500):
        w.record_many(rows(start, start + 500))
        await wait_for_async(lambda: _true(w.queued == 0), what="the queue taken")
    assert w.held <= 1000 and w.pending == 5000 and w.dropped == 0
    sink.away = 0
    w._retry_at = 0.0  # the store is back: retry now
    await w.flush()
    assert [tuple(r) for r in sink.records] == rows(0, 5000)
    await w.close()


async def test_the_queue_is_bounded_when_the_thread_cannot_take_it(tmp_path: Path) -> None:
    sink = MemorySink()
    sink.gate = gate = threading.Event()
    w = writer(sink, tmp_path, max_pending=1000)
    await w.start()
    w.record((0, "r0"))
    flush = asyncio.create_task(w.flush())
    await asyncio.to_thread(sink.entered.wait)  # the thread is stuck in a write
    w.record_many(rows(1, 1006))
    assert w.queued == 1000 and w.dropped == 5 and w.accepted == 1001
    gate.set()
    await flush
    await w.close()
    assert len(sink.records) == 1001 and w.pending == 0


async def test_without_a_spool_records_are_kept_in_memory(tmp_path: Path) -> None:
    sink = MemorySink(away=2)
    w = writer(sink, None, flush_seconds=0.05)
    await w.start()
    w.record_many(rows(0, 300))
    await wait_for_async(lambda: _true(w.pending == 0), what="the records written")
    await w.close()
    assert [tuple(r) for r in sink.records] == rows(0, 300) and sink.marks == {}
    assert os.listdir(tmp_path) == []


async def test_what_a_stop_could_not_write_is_replayed_at_the_next_start(tmp_path: Path) -> None:
    away = MemorySink(away=10**9)
    first = writer(away, tmp_path, retry_seconds=3600)
    await first.start()
    first.record_many(rows(0, 300))
    await first.close()  # the store never came back: the spool stays
    assert away.records == [] and len(os.listdir(tmp_path)) == 1
    sink = MemorySink()
    second = writer(sink, tmp_path)
    await second.start()
    second.record_many(rows(300, 310))
    await wait_for_async(lambda: _true(second.replayed == 300), what="the spool replayed")
    await second.close()
    assert sorted(tuple(r) for r in sink.records) == rows(0, 310)
    assert os.listdir(tmp_path) == [] and sink.marks == {}


async def test_a_replay_skips_what_the_store_already_has(tmp_path: Path) -> None:
    """A process killed after a batch was committed and before its spool was emptied: the
    store's last seq for the spool says where to resume, nothing is written twice."""
    dead = Spool.create(tmp_path)
    dead.append(1, [list(r) for r in rows(0, 4)])
    dead.append(5, [list(r) for r in rows(4, 10)])
    dead.close(remove=False)
    sink = MemorySink()
    sink.marks[dead.id] = 6  # committed up to the sixth record (inside the second frame)
    w = writer(sink, tmp_path)
    await w.start()
    await wait_for_async(lambda: _true(not dead.path.exists()), what="the spool replayed")
    await w.close()
    assert [tuple(r) for r in sink.records] == rows(6, 10) and w.replayed == 4


async def test_the_spool_is_emptied_once_the_store_has_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batchwriter, "ROTATE_BYTES", 1000)
    sink = MemorySink()
    w = writer(sink, tmp_path)
    await w.start()
    w.record_many(rows(0, 500))
    await wait_for_async(lambda: _true(spooled(w.spool_path) > 1000), what="the records spooled")
    await w.flush()
    assert spooled(w.spool_path) == 0
    w.record_many(rows(500, 510))  # the emptied spool takes new records
    await w.flush()
    await w.close()
    assert [tuple(r) for r in sink.records] == rows(0, 510)


async def test_syncs_are_grouped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: synced.append(fd) or real(fd))
    w = writer(MemorySink(), tmp_path, sync_seconds=3600)
    await w.start()
    for start in range(0, 50, 10):
        w.record_many(rows(start, start + 10))
        await wait_for_async(lambda: _true(w.queued == 0), what="the queue taken")
    assert synced == []  # five frames appended, none synced before the interval
    await w.close()
    assert len(synced) == 1  # the stop syncs them all at once


async def _true(value: bool) -> bool:
    return value
