"""The job queue seam: what carries job ids from the API to the workers.

Only ids travel; the job itself is in the database. A delivery is acknowledged after the
result is committed, so a broker that redelivers unacknowledged messages (RabbitMQ) loses
nothing when a worker dies. ``InProcessQueue`` is the embedded implementation: a priority heap
per model, higher priority first, then oldest first.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class QueuedJob:
    """What the queue carries: a job id and what it needs to route it."""

    id: str
    model: str
    priority: int = 0


# What fails a job whose message a broker dead-lettered, with the reason.
DeadHandler = Callable[[QueuedJob, str], Awaitable[None]]


class Delivery(Protocol):
    """One received job id; ``ack`` once its outcome is stored (or it needs no run)."""

    job: QueuedJob

    async def ack(self) -> None: ...


class JobQueue(Protocol):
    """What the job service and the workers need of a queue; nothing else is used.

    - ``put``: publish a committed job's id (publishing one already waiting may be a no-op:
      the database, not the queue, decides who runs a job, by its claim); True when a durable
      queue confirmed it just now (its row is then marked queued: sweeps leave it alone);
    - ``get``: wait for the next id of one model, highest priority first;
    - ``depth``: ids waiting (of one model, or all), for the queue-depth metric;
    - ``close``: stop; unacknowledged ids are the sweep's to publish again;
    - ``durable``: whether ids survive this process (a broker): a job submitted here is then
      stored already marked queued, and unmarked only if its publish fails.
    """

    durable: bool

    async def put(self, job: QueuedJob) -> bool: ...

    async def get(self, model: str) -> Delivery: ...

    def depth(self, model: str | None = None) -> int: ...

    async def close(self) -> None: ...


async def enqueue_each(enqueue: Callable[[T], Awaitable[None]], jobs: Sequence[T],
                       at_once: int = 256) -> None:
    """Enqueue many committed jobs (a batch's, a sweep's), ``at_once`` of them concurrently:
    a broker's confirms come back together instead of one round trip after the other, and
    ids put together may share a message (``INFERD_BROKER_GROUP``). Started in order."""
    for first in range(0, len(jobs), at_once):
        await asyncio.gather(*(enqueue(job) for job in jobs[first:first + at_once]))


@dataclass
class _LocalDelivery:
    job: QueuedJob

    async def ack(self) -> None:
        return None  # nothing to confirm: an in-memory id is gone once taken


class InProcessQueue:
    """Priority queues in memory, one per model; an id already waiting is not added twice."""

    durable = False

    def __init__(self) -> None:
        self._queues: dict[str, asyncio.PriorityQueue[tuple[int, int, str]]] = {}
        self._waiting: dict[str, QueuedJob] = {}
        self._order = itertools.count()

    def _queue(self, model: str) -> asyncio.PriorityQueue[tuple[int, int, str]]:
        return self._queues.setdefault(model, asyncio.PriorityQueue())

    async def put(self, job: QueuedJob) -> bool:
        if job.id not in self._waiting:
            self._waiting[job.id] = job
            self._queue(job.model).put_nowait((-job.priority, next(self._order), job.id))
        return False  # memory is not durable: a restart's recovery must find it again

    async def get(self, model: str) -> Delivery:
        while True:
            _, _, job_id = await self._queue(model).get()
            job = self._waiting.pop(job_id, None)
            if job is not None:
                return _LocalDelivery(job)

    def depth(self, model: str | None = None) -> int:
        if model is None:
            return len(self._waiting)
        return sum(1 for j in self._waiting.values() if j.model == model)

    async def close(self) -> None:
        self._waiting.clear()
