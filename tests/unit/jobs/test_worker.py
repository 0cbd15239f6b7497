"""``WorkerPool``: claim, run, store once, acknowledge; deferred and unclaimable jobs."""

from __future__ import annotations

import asyncio
from typing import Any

from inferd.ids import new_id
from inferd.jobs.queue import QueuedJob
from inferd.jobs.runner import EventLog, Outcome
from inferd.jobs.worker import WorkerPool
from inferd.store.jobs import JobRecord
from tests.unit.jobs.conftest import Parts

CHAT = {"model": "echo", "messages": [{"role": "user", "content": "a b"}]}


class Acked:
    """A delivery that records its acknowledgement."""

    def __init__(self, job: JobRecord) -> None:
        self.job = QueuedJob(job.id, job.model, job.priority)
        self.acked = False

    async def ack(self) -> None:
        self.acked = True


async def stored(parts: Parts, service: Any, **fields: Any) -> JobRecord:
    job = JobRecord(id=new_id("job"), endpoint="/v1/chat/completions", model="echo",
                    request=CHAT, request_hash="h", **fields)
    record, _ = await service.store.insert(job)
    return record


def pool_with(service: Any, run: Any) -> WorkerPool:
    return WorkerPool(service.store, service.queue, service.settings, service.signals, run,
                      service.finisher)


async def test_a_completed_run_is_stored_once_and_acknowledged(parts: Parts) -> None:
    service = parts.service()
    job = await stored(parts, service)
    delivery = Acked(job)
    await service.pool.process(delivery)
    done = await service.store.get(job.id)
    assert done is not None and done.status == "completed" and done.attempts == 1
    assert done.claimed_by == service.pool.worker_id and delivery.acked
    await service.close()


async def test_a_deferred_run_goes_back_to_pending_without_using_an_attempt(
        parts: Parts) -> None:
    service = parts.service()

    async def deferred(job: JobRecord, events: EventLog) -> Outcome:
        return Outcome("deferred", status_code=429)

    pool = pool_with(service, deferred)
    job = await stored(parts, service)
    delivery = Acked(job)
    await pool.process(delivery)
    again = await service.store.get(job.id)
    assert again is not None and again.status == "pending" and again.attempts == 0
    assert delivery.acked
    await service.close()


async def test_an_unclaimable_job_past_its_attempts_fails_and_is_acknowledged(
        parts: Parts) -> None:
    service = parts.service(max_attempts=2)
    ran: list[str] = []

    async def run(job: JobRecord, events: EventLog) -> Outcome:
        ran.append(job.id)
        return Outcome("completed", result={}, status_code=200)

    pool = pool_with(service, run)
    job = await stored(parts, service, attempts=2)
    delivery = Acked(job)
    await pool.process(delivery)
    failed = await service.store.get(job.id)
    assert ran == [] and delivery.acked
    assert failed is not None and failed.status == "failed" and failed.status_code == 500
    assert failed.error is not None and failed.error["code"] == "max_attempts_exceeded"
    await service.close()


async def test_a_run_whose_job_was_ended_elsewhere_is_stopped(parts: Parts) -> None:
    """When the lease renewal finds the job is no longer this worker's (cancelled, or taken
    over by another process), the run is cancelled and nothing of it is stored."""
    service = parts.service(lease_seconds=0.6)
    started = asyncio.Event()

    async def slow(job: JobRecord, events: EventLog) -> Outcome:
        started.set()
        await asyncio.sleep(60)
        return Outcome("completed", result={}, status_code=200)

    pool = pool_with(service, slow)
    job = await stored(parts, service)
    delivery = Acked(job)
    processing = asyncio.create_task(pool.process(delivery))
    await asyncio.wait_for(started.wait(), 30)
    # another process ends it while it runs
    assert await service.store.finish(job.id, None, "cancelled", from_status=("running",))
    await asyncio.wait_for(processing, 30)
    final = await service.store.get(job.id)
    assert final is not None and final.status == "cancelled" and final.result is None
    assert delivery.acked and pool.running == {}
    await service.close()
