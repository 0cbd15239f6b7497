"""The usage recorder: every request's usage, written to the store in batches.

``UsageRecorder.record`` appends one ``UsageRecord`` to an in-memory buffer (no I/O, no await); a
background task writes the buffer in one multi-row insert every ``flush_seconds``, or sooner
when ``batch_size`` records are waiting. A failed write keeps the records for the next try
(up to ``max_buffer``; beyond that the oldest are dropped and counted). ``close`` writes
what is left, so a clean shutdown loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
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


Writer = Callable[[Sequence[UsageRecord]], Awaitable[None]]


class UsageRecorder:
    """Buffers usage records and writes them in batches off the request path."""

    def __init__(self, write: Writer, *, flush_seconds: float = 1.0, batch_size: int = 2000,
                 max_buffer: int = 500_000) -> None:
        self._write = write
        self.flush_seconds = flush_seconds
        self.batch_size = batch_size
        self.max_buffer = max_buffer
        self._buffer: list[UsageRecord] = []
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self.flushes = 0
        self.written = 0
        self.dropped = 0

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def record(self, record: UsageRecord) -> None:
        buffer = self._buffer
        buffer.append(record)
        if len(buffer) >= self.batch_size:
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
            written = 0
            try:
                for start in range(0, len(batch), self.batch_size):
                    await self._write(batch[start:start + self.batch_size])
                    written += min(self.batch_size, len(batch) - start)
                    self.flushes += 1
            except Exception as exc:  # the store may be down: keep the rest for the next try
                rest = batch[written:]
                self._buffer = rest + self._buffer
                overflow = len(self._buffer) - self.max_buffer
                if overflow > 0:
                    del self._buffer[:overflow]
                    self.dropped += overflow
                log.warning("could not write %d usage records (kept for retry): %s",
                            len(rest), exc)
            self.written += written
            return written

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()
