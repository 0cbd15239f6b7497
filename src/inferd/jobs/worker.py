"""The worker loop: take a job id from the queue, claim the job with a lease, run it, store the
outcome once, acknowledge.

The loops of one process share their database round trips: the jobs they take at once are
claimed by one statement, their events written by one insert and their outcomes stored by one
transaction (``Grouped``: no timer, a lone job goes at once). Each job is still acknowledged
only after its own outcome is committed.

While a job runs its lease is renewed every third of ``lease_seconds``; when renewal fails (the
job was cancelled, or another worker took it over after this one stalled) the run is stopped.
A worker that dies simply stops renewing: the job's lease lapses and the sweep enqueues it again.

A run's usage records are held back (``inferd.usage.holding``) and committed with its outcome,
in one transaction: a job whose result is stored is billed, whatever happens next. The records
of a run whose outcome is not stored (cancelled, handed back, deferred, superseded) go to the
usage recorder; those of a run cut short by a crash are lost with it (the job runs again and
is billed then).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from inferd.jobs.finish import Finisher
from inferd.jobs.queue import Delivery, JobQueue
from inferd.jobs.runner import EventLog, Outcome
from inferd.jobs.signals import Signals
from inferd.lifecycle import DRAIN
from inferd.logs import request_id_var
from inferd.settings import JobSettings
from inferd.store.groups import Grouped
from inferd.store.jobs import Claimed, Finished, JobEvent, JobRecord, JobStore
from inferd.tasks import cancel_and_wait
from inferd.usage import UsageRecord, holding

log = logging.getLogger("inferd.jobs.worker")

# Runs a claimed job to its outcome, writing its token events to the log it is given.
Run = Callable[[JobRecord, EventLog], Coroutine[Any, Any, Outcome]]
# Takes the usage records of a run whose outcome was not stored (the usage recorder's).
Spill = Callable[[Sequence[UsageRecord]], None]


class WorkerPool:
    """In-process workers: ``concurrency`` loops per model, started as models appear."""

    def __init__(self, store: JobStore, queue: JobQueue, settings: JobSettings,
                 signals: Signals, run: Run, finisher: Finisher,
                 spill: Spill | None = None) -> None:
        self.store = store
        self.queue = queue
        self.settings = settings
        self.signals = signals
        self.run = run
        self.finisher = finisher
        self.spill: Spill = spill or (lambda records: None)
        self.worker_id = f"w-{secrets.token_hex(6)}"
        self._loops: dict[str, list[asyncio.Task[None]]] = {}
        self.running: dict[str, asyncio.Task[Outcome]] = {}
        self._closing = False
        self._idle: set[asyncio.Task[Any]] = set()  # loops waiting for their next job
        self._drain_undo: Callable[[], None] | None = None
        self._claims: Grouped[str, Claimed | None] = Grouped(self._claim)
        self._events: Grouped[tuple[str, list[JobEvent]], None] = Grouped(
            store.add_events_many)
        self._finishes: Grouped[Finished, bool] = Grouped(
            lambda outcomes: store.finish_many(self.worker_id, outcomes))

    async def _claim(self, job_ids: list[str]) -> list[Claimed | None]:
        return await self.store.claim_many(job_ids, self.worker_id, self.settings.lease_seconds,
                                           self.settings.max_attempts, start=True)

    def ensure(self, model: str) -> None:
        """Start this model's worker loops unless they run already."""
        if self._closing or model in self._loops:
            return
        self._watch_drain()
        count = self.settings.workers_for(model)
        self._loops[model] = [asyncio.create_task(self._loop(model), name=f"worker:{model}:{i}")
                              for i in range(count)]

    def _watch_drain(self) -> None:
        """From SIGTERM on (``inferd.lifecycle``), loops waiting for a job stop waiting."""
        if self._drain_undo is not None:
            return
        loop = asyncio.get_running_loop()

        def begin() -> None:  # called from the signal handler: act on the loop's turn
            loop.call_soon_threadsafe(self._stop_idle)

        self._drain_undo = DRAIN.on_begin(begin)

    def _stop_idle(self) -> None:
        for task in list(self._idle):
            task.cancel()

    async def _loop(self, model: str) -> None:
        me = asyncio.current_task()
        assert me is not None
        # ``_closing`` also ends a loop whose cancellation was lost; a draining process takes
        # no new job.
        while not self._closing and not DRAIN.active:
            self._idle.add(me)
            try:
                delivery = await self.queue.get(model)
            finally:
                self._idle.discard(me)
            try:
                await self.process(delivery)
            except asyncio.CancelledError:
                raise
            except Exception:  # keep the loop alive; the job's lease brings it back
                log.exception("worker failed on job %s", delivery.job.id)
                # The job's row is the truth: the sweep offers it again. Letting the message
                # go frees the broker's prefetch slot (holding it would stall this loop).
                await delivery.ack()

    async def process(self, delivery: Delivery) -> None:
        store, job_id = self.store, delivery.job.id
        claimed = await self._claim_or_hand_back(job_id)
        if claimed is None:
            await self.finisher.unclaimable(job_id)
            await delivery.ack()
            return
        job, last_seq, started = claimed
        events = EventLog(store, job.id, last_seq + 1, self.settings.event_flush_seconds,
                          self.signals.notify, self._events, hold_last=True)
        await events.start(job.attempts, written=started)
        records: list[UsageRecord] = []
        context = holding(records)
        context.run(request_id_var.set, job.id)  # its usage records and logs name the job
        task = asyncio.create_task(self.run(job, events), context=context)
        self.running[job.id] = task
        heartbeat = asyncio.create_task(self._heartbeat(job.id, task))
        try:
            outcome = await task
        except asyncio.CancelledError:
            self.spill(records)
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
            self.spill(records)
            await events.flush()
            await store.release(job.id, self.worker_id)
            await delivery.ack()
            return
        # The run's last events go with its outcome; not stored (the job was cancelled or
        # another worker's attempt owns its log now), they are dropped with it.
        stored = await self._finishes(Finished(job.id, outcome, records, events.take()))
        await delivery.ack()
        if stored:
            await self.finisher.finished(job.id, job)
        else:
            self.spill(records)

    async def _claim_or_hand_back(self, job_id: str) -> Claimed | None:
        """Claim in this process's group; stopped meanwhile, hand the job back once the
        group's claim has landed (else it would sit claimed until its lease lapses)."""
        claim = asyncio.ensure_future(self._claims(job_id))
        try:
            return await asyncio.shield(claim)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                if await claim is not None:
                    await self.store.release(job_id, self.worker_id)
            raise

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
        """Stop the loops. Draining (SIGTERM), the running jobs have what is left of the
        grace to finish; then, and at once otherwise, the jobs still running go back to
        ``pending`` (their leases released) for another worker."""
        self._closing = True
        if self._drain_undo is not None:
            self._drain_undo()
        loops = [t for tasks in self._loops.values() for t in tasks]
        self._stop_idle()
        busy = [t for t in loops if not t.done()]
        if busy and self.running and DRAIN.active and DRAIN.remaining() > 0:
            log.info("waiting up to %.0f s for %d running job(s) to finish",
                     DRAIN.remaining(), len(self.running))
            await asyncio.wait(busy, timeout=DRAIN.remaining())
        for task in self.running.values():
            task.cancel()
        await cancel_and_wait(loops, what="worker loops")
