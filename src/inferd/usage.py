"""The usage recorder: every request's usage, written to the store in batches.

``UsageRecorder.record`` appends one ``UsageRecord`` to an in-memory buffer (no I/O, no await); a
background task writes the buffer in one multi-row insert every ``flush_seconds``, or sooner
when ``batch_size`` records are waiting. A write that fails because the store is away
(``transient``) keeps the records for the next try (up to ``max_buffer``; beyond that the
oldest are dropped and counted). A write the store refuses for its data is retried one record
at a time, so one record no column can hold (a value the database refuses) is dropped, logged
and counted in ``rejected``, and never holds back the others. ``close`` writes what is left, so
a clean shutdown loses nothing; ``kill -9`` loses the records of the sync requests of the
last ``flush_seconds`` at most (the bound, README "Reliability").

A job's records do not go through the buffer: a worker runs the job inside ``holding(records)``,
where ``record`` appends to that list instead, and the records are then committed in the
transaction that stores the job's result (``JobStore.finish``). A crash therefore never leaves
a stored result unbilled.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import NamedTuple

log = logging.getLogger("inferd.usage")


class UsageRecord(NamedTuple):
    """One request's usage: one row of the usage table (``metrics``), its fields in column
    order. A tuple, so that a batch goes to the driver's executemany as it is."""

    created_at: float
    request_id: str | None
    key_id: str | None
    model: str
    replica: str | None
    endpoint: str
    stream: bool
    status: int
    error: str | None
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    latency_ms: float
    ttft_ms: float | None
    images: int | None  # image generation: pictures made
    steps: int | None  # and denoising steps run
    image_units: int | None = None  # and their cost units (steps x megapixels x pictures)


Writer = Callable[[Sequence[UsageRecord]], Awaitable[None]]

# The records of the job attempt running in this context (None: not inside a job).
_held: contextvars.ContextVar[list[UsageRecord] | None] = contextvars.ContextVar(
    "inferd_usage_held", default=None)


def holding(records: list[UsageRecord]) -> contextvars.Context:
    """A copy of the current context in which every recorded usage record is appended to
    ``records`` instead of the recorder's buffer (run a job's task in it)."""
    context = contextvars.copy_context()
    context.run(_held.set, records)
    return context


def in_job() -> bool:
    """Whether the current code runs a job (its usage records are held, see ``holding``)."""
    return _held.get() is not None


def _always(_exc: Exception) -> bool:
    return True


class UsageRecorder:
    """Buffers usage records and writes them in batches off the request path."""

    def __init__(self, write: Writer, *, flush_seconds: float = 1.0, batch_size: int = 2000,
                 max_buffer: int = 500_000,
                 transient: Callable[[Exception], bool] = _always) -> None:
        self._write = write
        # True when a failed write may succeed later as it is (the store was unreachable).
        self.transient = transient
        self.flush_seconds = flush_seconds
        self.batch_size = batch_size
        self.max_buffer = max_buffer
        self._buffer: list[UsageRecord] = []
        self._writing = 0  # records taken from the buffer by a flush still writing them
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self.flushes = 0
        self.written = 0
        self.dropped = 0
        self.rejected = 0

    @property
    def pending(self) -> int:
        """Records not yet durable: buffered, or taken by a flush whose write has not ended."""
        return len(self._buffer) + self._writing

    def record(self, record: UsageRecord) -> None:
        held = _held.get()
        if held is not None:  # a job's: written with its result
            held.append(record)
            return
        buffer = self._buffer
        buffer.append(record)
        if len(buffer) >= self.batch_size:
            self._wake.set()

    def record_many(self, records: Sequence[UsageRecord]) -> None:
        """Buffer records held back by a job whose result was not stored (cancelled, handed
        back): the work they describe was done."""
        self._buffer.extend(records)
        if len(self._buffer) >= self.batch_size:
            self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.flush_seconds)
            self._wake.clear()
            await self.flush()

    async def flush(self) -> int:
        """Write everything buffered now; returns how many records were written."""
        async with self._lock:
            batch, self._buffer = self._buffer, []
            self._writing = len(batch)
            written = done = 0  # done: written or rejected
            try:
                for start in range(0, len(batch), self.batch_size):
                    chunk = batch[start:start + self.batch_size]
                    try:
                        await self._write(chunk)
                    except Exception as exc:
                        if self.transient(exc):
                            raise
                        for record in chunk:  # find the records the store refuses
                            written += await self._write_one(record)
                            done += 1
                    else:
                        written += len(chunk)
                        done += len(chunk)
                    self._writing -= len(chunk)  # durable (or refused): no longer pending
                    self.flushes += 1
            except Exception as exc:  # the store may be down: keep the rest for the next try
                rest = batch[done:]
                self._buffer = rest + self._buffer
                overflow = len(self._buffer) - self.max_buffer
                if overflow > 0:
                    del self._buffer[:overflow]
                    self.dropped += overflow
                log.warning("could not write %d usage records (kept for retry): %s",
                            len(rest), exc)
            finally:
                self._writing = 0
            self.written += written
            return written

    async def _write_one(self, record: UsageRecord) -> int:
        """1 when ``record`` was written, 0 when the store refused it (dropped, logged and
        counted); raises when the store is away."""
        try:
            await self._write([record])
        except Exception as exc:
            if self.transient(exc):
                raise
            self.rejected += 1
            log.error("usage record refused by the store, dropped: %r (%s: %s)", record,
                      exc.__class__.__name__, str(exc).splitlines()[0] if str(exc) else "")
            return 0
        return 1

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()
