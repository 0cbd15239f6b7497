"""Which jobs this process runs, and handing a committed job to the workers (the queue).

Apart from ``JobService`` because the batches and the sweep enqueue jobs too: each gets this
object's ``enqueue`` from the composition root (``inferd.jobs.cluster.build_jobs``).
"""

from __future__ import annotations

import time
from collections.abc import Collection

from inferd.errors import ModelNotFound
from inferd.jobs.queue import JobQueue, QueuedJob
from inferd.jobs.worker import WorkerPool
from inferd.routing.router import Router
from inferd.settings import JobSettings
from inferd.store.groups import Grouped
from inferd.store.jobs import JobRecord, JobStore

# How long a job id the broker confirmed counts as queued, in leases: a sweep republishes it
# only after that (a message lost some other way: a deep queue gets no copies meanwhile).
QUEUED_LEASES = 10


class Dispatch:
    """The models this process runs and the way a new job reaches a worker.

    ``pool``: this process's workers (None: it only publishes, workers elsewhere run the
    jobs); ``only``: the models it may run (``inferd worker --model``; None: any its router
    can run now).
    """

    def __init__(
        self,
        store: JobStore,
        queue: JobQueue,
        settings: JobSettings,
        router: Router,
        pool: WorkerPool | None,
        only: Collection[str] | None = None,
    ) -> None:
        self.store = store
        self.queue = queue
        self.settings = settings
        self.router = router
        self.pool = pool
        self.only = frozenset(only) if only is not None else None
        # ids the broker confirmed, marked queued for QUEUED_LEASES leases (jobs submitted
        # here are stored marked); ids it did not take, unmarked for the sweep to publish
        self._queued: Grouped[str, None] = Grouped(
            lambda ids: self.store.mark_queued(ids, self.queued_until())
        )
        self._unqueued: Grouped[str, None] = Grouped(lambda ids: self.store.mark_queued(ids, None))

    def runnable(self, model: str) -> bool:
        """Whether this process can run ``model`` now (its router has a replica of it)."""
        if self.only is not None and model not in self.only:
            return False
        try:
            return bool(self.router.entry(model).replicas)
        except ModelNotFound:
            return False

    def runnable_models(self) -> list[str]:
        return [m for m in self.router.model_names() if self.runnable(m)]

    def taken_models(self) -> Collection[str] | None:
        """The models whose jobs this process takes from the database (None: all of them,
        when it only publishes jobs for workers elsewhere)."""
        return self.runnable_models() if self.pool is not None else None

    def running(self) -> Collection[str]:
        """Ids of the jobs this process runs right now."""
        return set(self.pool.running) if self.pool is not None else ()

    def queued_until(self) -> float:
        """Until when a job id the broker took counts as queued (see ``QUEUED_LEASES``)."""
        return time.time() + QUEUED_LEASES * self.settings.lease_seconds

    def publishes(self, model: str) -> bool:
        """Whether ``enqueue`` hands a new job of ``model`` to a durable queue."""
        return self.queue.durable and (self.pool is None or self.runnable(model))

    def start_workers(self) -> None:
        """Workers for every model this process can run now."""
        if self.pool is not None:
            for model in self.runnable_models():
                self.pool.ensure(model)

    async def enqueue(self, job: JobRecord, *, premarked: bool = False) -> None:
        """Hand a committed job to the workers. A job of a model this process cannot run stays
        pending in the database for the process that can (its sweep enqueues it there).
        ``premarked``: the job was stored marked queued (``JobService.submit``)."""
        if self.pool is not None:
            if not self.runnable(job.model):
                return
            self.pool.ensure(job.model)
        published = await self.queue.put(QueuedJob(job.id, job.model, job.priority))
        # not awaited: the marks only spare the sweep a republish, or hand it one
        if published and not premarked:
            self._queued.post(job.id)
        elif premarked and not published:
            self._unqueued.post(job.id)
