"""The worker loop: take a job id from the queue, claim the job with a lease, run it, store the
outcome once, acknowledge.

The loops of one process share their database round trips: the jobs they take at once are
claimed by one statement, their events written by one insert and their outcomes stored by one
transaction (``Grouped``: no timer, a lone job goes at once). Each job is still acknowledged
only after its own outcome is committed.

While a job runs its lease is renewed every third of ``lease_seconds``; when renewal fails (the
job was cancelled, or another worker took it over after this one stalled) the run is stopped.
A worker that dies simply stops renewing: the job's lease lapses and the sweep enqueues it again.

A job on probation (a run of it ended with its process: ``JobRecord.crashes``) runs alone in
its process (``SoloGate``): no other job starts while it runs, and it starts only once the jobs
running before it have ended; claimed while others run, it is handed back and claimed again
when they have. So if the process dies while it runs, that crash is its own: at
``max_crashes`` it is quarantined (``Finisher.unclaimable``) instead of taking the next
process down.

A run deferred by its key's rate limit goes back to pending with a not-before time (doubling at
each deferral, ``JobSettings.defer_delay``): no claim or sweep takes it earlier, and its 429
usage record is dropped (a deferral is not a request answered).

A run's usage records are held back (``inferd.usage.holding``) and committed with its outcome,
in one transaction: a job whose result is stored is billed, whatever happens next. The records
of a run whose outcome is not stored (cancelled, handed back, superseded) go to the
usage recorder; those of a run cut short by a crash are lost with it (the job runs again and
is billed then).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from inferd.jobs.finish import Finisher
from inferd.jobs.queue import Delivery, JobQueue
from inferd.jobs.runner import EventLog, Outcome
from inferd.jobs.signals import Signals
from inferd.lifecycle import Drain
from inferd.logs import job_deadline_var, job_id_var, request_id_var
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


class SoloGate:
    """Who runs in this process: any number of ordinary jobs, or one job on probation alone.

    ``enter`` (an ordinary job, before its claim) waits while a job on probation runs or
    waits to run; ``enter_solo`` waits until no job runs, then keeps every other out until
    ``leave``. ``upgrade``: the caller, having entered, is the only job running: it becomes
    the solo one at once.
    """

    def __init__(self) -> None:
        self.active = 0
        self.solo = False
        self._waiting_solo = 0
        self._changed = asyncio.Event()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wait(self) -> None:
        await self._changed.wait()

    async def enter(self) -> None:
        while self.solo or self._waiting_solo:
            await self._wait()
        self.active += 1

    async def enter_solo(self) -> None:
        self._waiting_solo += 1
        try:
            while self.solo or self.active:
                await self._wait()
        finally:
            self._waiting_solo -= 1
            self._notify()  # stopped while waiting: the others go on
        self.active, self.solo = 1, True

    @property
    def waiting(self) -> int:
        """Jobs on probation waiting for the others to end."""
        return self._waiting_solo

    def upgrade(self) -> bool:
        """Become the solo job if the caller is the only one running (no await: atomic)."""
        if self.active != 1 or self.solo:
            return False
        self.solo = True
        return True

    def leave(self) -> None:
        self.active -= 1
        if self.active == 0:
            self.solo = False
        self._notify()


class WorkerPool:
    """In-process workers: ``concurrency`` loops per model, started as models appear."""

    def __init__(self, store: JobStore, queue: JobQueue, settings: JobSettings,
                 signals: Signals, run: Run, finisher: Finisher,
                 spill: Spill | None = None, drain: Drain | None = None) -> None:
        """``drain``: the process's stop (``inferd.lifecycle``; without one it never
        drains)."""
        self.store = store
        self.queue = queue
        self.settings = settings
        self.signals = signals
        self.run = run
        self.finisher = finisher
        self.spill: Spill = spill or (lambda records: None)
        self.drain = drain or Drain()
        self.gate = SoloGate()
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
                                           self.settings.max_attempts, start=True,
                                           max_crashes=self.settings.max_crashes)

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

        self._drain_undo = self.drain.on_begin(begin)

    def _stop_idle(self) -> None:
        for task in list(self._idle):
            task.cancel()

    async def _loop(self, model: str) -> None:
        me = asyncio.current_task()
        assert me is not None
        # ``_closing`` also ends a loop whose cancellation was lost; a draining process takes
        # no new job.
        while not self._closing and not self.drain.active:
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
        await self.gate.enter()
        inside = True
        try:
            claimed = await self._claim_or_hand_back(delivery.job.id)
            if claimed is not None and claimed.job.on_probation and not self.gate.upgrade():
                # others run here: hand it back, wait until they have ended, claim it again
                await self.store.release(claimed.job.id, self.worker_id)
                self.gate.leave()
                inside = False
                await self.gate.enter_solo()
                inside = True
                claimed = await self._claim_or_hand_back(delivery.job.id)
            await self._process(delivery, claimed)
        finally:
            if inside:
                self.gate.leave()

    async def _process(self, delivery: Delivery, claimed: Claimed | None) -> None:
        store, job_id = self.store, delivery.job.id
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
        context.run(job_id_var.set, job.id)
        context.run(job_deadline_var.set, job.deadline_at)
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
            # pending again without using up an attempt, not before its backoff has passed
            # (the sweep offers it again then); its 429 usage record is dropped
            await events.flush()
            await store.release(job.id, self.worker_id, not_before=time.time()
                                + self.settings.defer_delay(job.deferrals))
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
        if busy and self.running and self.drain.active and self.drain.remaining() > 0:
            log.info("waiting up to %.0f s for %d running job(s) to finish",
                     self.drain.remaining(), len(self.running))
            await asyncio.wait(busy, timeout=self.drain.remaining())
        for task in self.running.values():
            task.cancel()
        await cancel_and_wait(loops, what="worker loops")
