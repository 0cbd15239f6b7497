"""The worker loop: take a job id from the queue, claim the job with a lease, run it, store the
outcome once, acknowledge.

While a job runs its lease is renewed every third of ``lease_seconds``; when renewal fails (the
job was cancelled, or another worker took it over after this one stalled) the run is stopped.
A worker that dies simply stops renewing: the job's lease lapses and the sweep enqueues it again.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Coroutine
from typing import Any

from inferd.jobs.config import JobSettings
from inferd.jobs.finish import Finisher
from inferd.jobs.queue import Delivery, JobQueue
from inferd.jobs.runner import EventLog, Outcome
from inferd.jobs.signals import Signals
from inferd.store.jobs import JobRecord, JobStore

log = logging.getLogger("inferd.jobs.worker")

# Runs a claimed job to its outcome, writing its token events to the log it is given.
Run = Callable[[JobRecord, EventLog], Coroutine[Any, Any, Outcome]]


class WorkerPool:
    """In-process workers: ``concurrency`` loops per model, started as models appear."""

    def __init__(self, store: JobStore, queue: JobQueue, settings: JobSettings,
                 signals: Signals, run: Run, finisher: Finisher) -> None:
        self.store = store
        self.queue = queue
        self.settings = settings
        self.signals = signals
        self.run = run
        self.finisher = finisher
        self.worker_id = f"w-{secrets.token_hex(6)}"
        self._loops: dict[str, list[asyncio.Task[None]]] = {}
        self.running: dict[str, asyncio.Task[Outcome]] = {}
        self._closing = False

    def ensure(self, model: str) -> None:
        """Start this model's worker loops unless they run already."""
        if self._closing or model in self._loops:
            return
        count = self.settings.workers_for(model)
        self._loops[model] = [asyncio.create_task(self._loop(model), name=f"worker:{model}:{i}")
                              for i in range(count)]

    async def _loop(self, model: str) -> None:
        while True:
            delivery = await self.queue.get(model)
            try:
                await self.process(delivery)
            except asyncio.CancelledError:
                raise
            except Exception:  # keep the loop alive; the job's lease brings it back
                log.exception("worker failed on job %s", delivery.job.id)

    async def process(self, delivery: Delivery) -> None:
        store, job_id = self.store, delivery.job.id
        job = await store.claim(job_id, self.worker_id, self.settings.lease_seconds,
                                self.settings.max_attempts)
        if job is None:
            await self.finisher.unclaimable(job_id)
            await delivery.ack()
            return
        events = EventLog(store, job.id, await store.last_seq(job.id) + 1,
                          self.settings.event_flush_seconds, self.signals.notify)
        await events.start(job.attempts)
        task = asyncio.create_task(self.run(job, events))
        self.running[job.id] = task
        heartbeat = asyncio.create_task(self._heartbeat(job.id, task))
        try:
            outcome = await task
        except asyncio.CancelledError:
            if self._closing:
                await store.release(job.id, self.worker_id)
                raise
            # cancelled through the API (the row says so already) or taken over
            await events.flush()
            await delivery.ack()
            self.signals.notify(job.id)
            return
        finally:
            heartbeat.cancel()
            self.running.pop(job.id, None)
        if outcome.status == "deferred":
            # pending again without using up an attempt; the sweep offers it again
            await store.release(job.id, self.worker_id)
            await delivery.ack()
            return
        stored = await store.finish(
            job.id, self.worker_id, outcome.status, result=outcome.result, error=outcome.error,
            status_code=outcome.status_code, usage=outcome.usage)
        await delivery.ack()
        if stored:
            await self.finisher.finished(job.id)

    async def _heartbeat(self, job_id: str, task: asyncio.Task[Outcome]) -> None:
        every = self.settings.lease_seconds / 3
        while not task.done():
            await asyncio.sleep(every)
            try:
                ours = await self.store.renew(job_id, self.worker_id,
                                                      self.settings.lease_seconds)
            except Exception:  # a database hiccup: try again on the next beat
                log.warning("could not renew the lease of job %s", job_id, exc_info=True)
                continue
            if not ours:
                task.cancel()
                return

    def cancel_local(self, job_id: str) -> bool:
        task = self.running.get(job_id)
        if task is None:
            return False
        task.cancel()
        return True

    async def close(self) -> None:
        """Stop the loops; jobs that were running go back to ``pending`` for the next start."""
        self._closing = True
        loops = [t for tasks in self._loops.values() for t in tasks]
        for task in [*self.running.values(), *loops]:
            task.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
