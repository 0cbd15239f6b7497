"""The usage recorder: every request's usage, written to the store in batches.

``UsageRecorder.record`` appends one ``UsageRecord`` to a queue (no I/O, no await); a writer
thread spools it to a local file (``<data_dir>/spool/usage``) within about 10 ms and writes the
records to the store in batches sized by the backlog, over a connection of its own
(``inferd.batchwriter``). Pending records are bounded (``usage_max_pending``); ``close`` writes
what is left, so a clean shutdown loses nothing, and ``kill -9`` loses at most the records of
the last few milliseconds the thread could not spool (the spool of a killed process is replayed
at the next start, without writing a record twice).

A job's records do not go through the recorder: a worker runs the job inside
``holding(records)``, where ``record`` appends to that list instead, and the records are then
committed in the transaction that stores the job's result (``JobStore.finish``). A crash
therefore never leaves a stored result unbilled.
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NamedTuple

from inferd.batchwriter import Sink, SpooledWriter


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
    cost: float = 0.0  # in the currency unit, at its model's (or replica's) price


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


def decode(fields: list[Any]) -> UsageRecord:
    """A record read back from the spool (the JSON array of its fields)."""
    return UsageRecord(*fields)


class UsageRecorder(SpooledWriter[UsageRecord]):
    """Spools usage records and writes them in batches off the request path."""

    def __init__(self, sink: Callable[[], Awaitable[Sink[UsageRecord]]], *,
                 directory: Path | None = None, flush_seconds: float = 1.0,
                 batch_size: int = 2000, max_pending: int = 100_000,
                 sync_seconds: float = 0.1,
                 transient: Callable[[BaseException], bool] = lambda _exc: True) -> None:
        super().__init__(sink, decode=decode, directory=directory, name="usage",
                         flush_seconds=flush_seconds, batch_size=batch_size,
                         max_pending=max_pending, sync_seconds=sync_seconds,
                         transient=transient)

    def record(self, record: UsageRecord) -> None:
        held = _held.get()
        if held is not None:  # a job's: written with its result
            held.append(record)
            return
        super().record(record)
