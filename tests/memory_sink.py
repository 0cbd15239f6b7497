"""A batched writer's store in memory (``inferd.batchwriter.Sink``): the records and the last
seq per spool, each write all or nothing, like a database transaction."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any


class MemorySink:
    """Records and marks; ``away`` writes fail as if the store were unreachable, and records
    ``refuse`` says yes to are refused (a value no column can hold)."""

    def __init__(self, *, away: int = 0, refuse: Callable[[Any], bool] | None = None) -> None:
        self.records: list[Any] = []
        self.batches: list[int] = []  # the size of each write that succeeded
        self.marks: dict[str, int] = {}
        self.away = away
        self.refuse = refuse
        self.closed = 0
        self.entered = threading.Event()  # set by a write (tests that hold writes)
        self.gate: threading.Event | None = None  # when set: writes wait for it

    async def write(self, records: Sequence[Any], spool: str | None, last: int) -> None:
        self.entered.set()
        if self.gate is not None:
            self.gate.wait()
        if self.away:
            self.away -= 1
            raise ConnectionError("the store is away")
        if self.refuse is not None and any(self.refuse(r) for r in records):
            raise ValueError("a value no column can hold")
        self.records.extend(records)
        self.batches.append(len(records))
        if spool is not None:
            self.marks[spool] = last

    async def last(self, spool: str) -> int:
        return self.marks.get(spool, 0)

    async def forget(self, spool: str) -> None:
        self.marks.pop(spool, None)

    async def close(self) -> None:
        self.closed += 1


def opener(sink: MemorySink) -> Callable[[], Any]:
    """The factory a writer calls on its thread: the same sink every time."""

    async def open_sink() -> MemorySink:
        return sink

    return open_sink
