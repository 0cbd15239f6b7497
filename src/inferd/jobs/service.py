"""The job service: accept, find, cancel, delete and follow jobs, and run the in-process workers.

A job is committed before ``submit`` returns (the HTTP layer answers 202 after that); the queue
then carries only its id.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Collection
from typing import Any

import orjson

from inferd.auth.principal import Principal
from inferd.errors import Conflict, JobCancelled, ModelNotFound, NotFound
from inferd.ids import new_id
from inferd.images import ImageService
from inferd.inference import Inference
from inferd.jobs.batches import BatchService
from inferd.jobs.caps import PendingCaps
from inferd.jobs.finish import Finisher
from inferd.jobs.maintenance import Maintenance
from inferd.jobs.owners import Owners, PrincipalLookup
from inferd.jobs.queue import InProcessQueue, JobQueue, QueuedJob
from inferd.jobs.requests import (
    check_webhook_url,
    idempotency_scope,
    job_object,
    parse_request,
    request_hash,
)
from inferd.jobs.runner import EventLog, Outcome, run_job
from inferd.jobs.signals import Signals
from inferd.jobs.webhooks import WebhookSender
from inferd.jobs.worker import WorkerPool
from inferd.routing.router import Router
from inferd.schemas.images import ImageGenerationRequest
from inferd.settings import JobSettings
from inferd.store.db import Database
from inferd.store.files import FileStore
from inferd.store.groups import Grouped
from inferd.store.job_inserts import GroupInserter
from inferd.store.jobs import JobPage, JobRecord, JobStore
from inferd.store.leases import LeaseStore
from inferd.store.repo import KeyValueStore
from inferd.tasks import cancel_and_wait

SSEvent = tuple[int | None, str, str]
# The jobs of background responses: private to their key, as the responses are (no admin
# override, README "Authorization"); any other job an admin may see.
PRIVATE_SOURCE = "responses"
# How long a job id the broker confirmed counts as queued, in leases: a sweep republishes it
# only after that (a message lost some other way: a deep queue gets no copies meanwhile).
QUEUED_LEASES = 10


class JobService:
    """Everything the HTTP routes and the compat APIs do with jobs.

    It builds its parts and hands each only what it uses; none of them knows the service.
    With ``run_workers`` this process runs jobs, of the models its router can run now only:
    other processes sharing the database run the rest.
    """

    def __init__(self, db: Database, router: Router, inference: Inference,
                 settings: JobSettings, queue: JobQueue | None = None,
                 run_workers: bool = True, principal_lookup: PrincipalLookup | None = None,
                 *, open_mode: Principal) -> None:
        self.db, self.router, self.inference, self.settings = db, router, inference, settings
        self.store = JobStore(db)
        self.inserts = GroupInserter(self.store)
        # ids the broker confirmed, marked queued for QUEUED_LEASES leases (jobs submitted
        # here are stored marked); ids it did not take, unmarked for the sweep to publish
        self._queued: Grouped[str, None] = Grouped(lambda ids: self.store.mark_queued(
            ids, self.queued_until()))
        self._unqueued: Grouped[str, None] = Grouped(lambda ids: self.store.mark_queued(
            ids, None))
        # The models this process may run (``inferd worker --model``); None = any it can.
        self.only: set[str] | None = None
        self.queue: JobQueue = queue or InProcessQueue()
        self.signals = Signals()
        self.owners = Owners(principal_lookup, open_mode)
        self.webhooks = WebhookSender(self.store, KeyValueStore(db), settings)
        self.caps = PendingCaps(self.store, settings)
        self.batches = BatchService(db, self.store, settings, resolve=router.resolve,
                                    enqueue=self.enqueue, caps=self.caps)
        self.finisher = Finisher(self.store, settings, self.signals, self.webhooks,
                                 self.owners, self.batches)
        self.pool = (WorkerPool(self.store, self.queue, settings, self.signals, self._run,
                                self.finisher, spill=inference.metering.recorder.record_many)
                     if run_workers else None)
        self.maintenance = Maintenance(
            self.store, settings, batches=self.batches, webhooks=self.webhooks,
            owners=self.owners, finisher=self.finisher, enqueue=self.enqueue,
            models=self.taken_models, running=lambda: set(self.pool.running) if self.pool else ())
        self.images = ImageService(inference, FileStore(db), settings.retention_seconds)
        self._sweep: asyncio.Task[None] | None = None

    # -- life cycle -------------------------------------------------------------------------
    async def start(self) -> None:
        """Start workers, re-enqueue what a previous run left, resume webhooks, sweep."""
        for model in self.runnable_models():
            if self.pool is not None:
                self.pool.ensure(model)
        await self.maintenance.recover()
        await self.maintenance.resume_webhooks()
        self._sweep = asyncio.create_task(self.maintenance.run_forever(LeaseStore(self.db)))

    async def close(self) -> None:
        self.maintenance.stopping = True  # ends its loop even if a cancellation is lost
        if self._sweep is not None:
            await cancel_and_wait([self._sweep], what="job sweep")
        if self.pool is not None:
            await self.pool.close()
        await self.webhooks.close()
        await self.queue.close()

    def runnable(self, model: str) -> bool:
        """Whether this process can run ``model`` now (its router has a replica of it)."""
        if self.only is not None and model not in self.only:
            return False
        try:
            return bool(self.router.entry(model).replicas)
        except ModelNotFound:
            return False

    def queued_until(self) -> float:
        """Until when a job id the broker took counts as queued (see ``QUEUED_LEASES``)."""
        return time.time() + QUEUED_LEASES * self.settings.lease_seconds

    def _publishes(self, model: str) -> bool:
        """Whether ``enqueue`` hands a new job of ``model`` to a durable queue."""
        return self.queue.durable and (self.pool is None or self.runnable(model))

    def runnable_models(self) -> list[str]:
        return [m for m in self.router.model_names() if self.runnable(m)]

    def taken_models(self) -> Collection[str] | None:
        """The models whose jobs this process takes from the database (None: all of them,
        when it only publishes jobs for workers elsewhere)."""
        return self.runnable_models() if self.pool is not None else None

    async def _run(self, job: JobRecord, events: EventLog) -> Outcome:
        # the owner is resolved inside the job: a revoked key fails its job, not the worker
        return await run_job(self.inference, job, self.owners.of(job), events,
                             self.images)

    # -- submit -----------------------------------------------------------------------------
    async def submit(self, principal: Principal, endpoint: str, body: dict[str, Any], *,
                     priority: int = 0, deadline_at: float | None = None,
                     webhook_url: str | None = None, metadata: dict[str, Any] | None = None,
                     idempotency_key: str | None = None, source: str = "api",
                     meta: dict[str, Any] | None = None) -> tuple[JobRecord, bool]:
        """Validate and commit a job, then enqueue it; ``(job, created)``.

        A known idempotency key returns the job it made (``created`` false), or 409 when the
        request differs.
        """
        request = parse_request(endpoint, body, internal=source == "responses")
        if isinstance(request, ImageGenerationRequest):
            request = self.images.with_model(request)
        asked = str(getattr(request, "model", ""))
        model = self.router.resolve(asked)
        if principal.allowed_models is not None:
            self.inference.check_model(principal, asked)  # 403 model_not_allowed
        await self.caps.check_jobs(principal)  # 429 past the key's unfinished jobs
        stored = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
        job = JobRecord(
            id=new_id("job"), endpoint=endpoint, model=model, request=stored,
            request_hash=request_hash(endpoint, stored), owner=principal.key_id,
            owner_scope=principal.scope, source=source, priority=priority,
            idempotency_scope=(idempotency_scope(principal.key_id, idempotency_key)
                               if idempotency_key else None),
            deadline_at=deadline_at,
            webhook_url=await check_webhook_url(webhook_url, self.webhooks.allow),
            meta={**(meta or {}), **({"metadata": metadata} if metadata else {})} or None)
        # Published to a broker, the job is stored already marked queued: one statement less
        # per submission than marking it once the broker confirmed (a failed publish unmarks
        # it; a gateway that dies between commit and publish leaves the mark to lapse).
        premarked = self._publishes(model)
        if premarked:
            job.lease_expires_at = self.queued_until()
        record, created = await self.inserts.insert(job)
        if not created:
            if record.request_hash != job.request_hash or record.endpoint != endpoint:
                raise Conflict("This idempotency key was already used with a different "
                               "request.", param="idempotency_key", code="idempotency_conflict")
            return record, False
        self.owners.remember(principal)
        await self.enqueue(record, premarked=premarked)
        return record, True

    async def enqueue(self, job: JobRecord, *, premarked: bool = False) -> None:
        """Hand a committed job to the workers. A job of a model this process cannot run stays
        pending in the database for the process that can (its sweep enqueues it there).
        ``premarked``: the job was stored marked queued (``submit``)."""
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

    # -- read -------------------------------------------------------------------------------
    async def get(self, principal: Principal, job_id: str) -> JobRecord:
        job = await self.store.get(job_id)
        if job is None or not (job.owner == principal.key_id or (
                principal.is_admin and job.source != PRIVATE_SOURCE)):
            raise NotFound(f"No job with id '{job_id}'.", param="job_id", code="job_not_found")
        return job

    async def page(self, principal: Principal, *, status: str | None = None,
                   model: str | None = None, after: str | None = None, limit: int = 20,
                   source: str | None = None) -> JobPage:
        return await self.store.page(owner=principal.key_id, all_owners=principal.is_admin,
                                     status=status, model=model, after=after, limit=limit,
                                     source=source, private_source=PRIVATE_SOURCE)

    async def wait(self, principal: Principal, job_id: str,
                   within: float | None = None) -> JobRecord:
        """Until the job has finished (or ``within`` seconds passed): its latest state."""
        end = None if within is None else time.monotonic() + within
        with self.signals.follow(job_id) as follower:
            while True:
                changed = follower.changed()
                job = await self.get(principal, job_id)
                left = 1.0 if end is None else min(1.0, end - time.monotonic())
                if job.finished or left <= 0:
                    return job
                await follower.wait(changed, left)

    async def events(self, principal: Principal, job_id: str,
                     after: int = 0) -> AsyncIterator[SSEvent]:
        """The job's events after sequence number ``after``, live until it finishes, then a
        last event named after its final status carrying the whole job."""
        await self.get(principal, job_id)
        with self.signals.follow(job_id) as follower:
            last, said = after, ""
            while True:
                changed = follower.changed()
                for event in await self.store.events_after(job_id, last):
                    last = event.seq
                    yield event.seq, event.kind, event.data
                job = await self.store.get(job_id)
                if job is None:
                    return
                if job.finished:
                    for event in await self.store.events_after(job_id, last):
                        yield event.seq, event.kind, event.data
                    yield None, job.status, orjson.dumps(job_object(job)).decode()
                    return
                if job.status == "pending" and said != "pending":
                    said = "pending"
                    yield None, "status", '{"status":"pending"}'
                await follower.wait(changed, 1.0)

    # -- change -----------------------------------------------------------------------------
    async def cancel(self, principal: Principal, job_id: str) -> JobRecord:
        job = await self.get(principal, job_id)
        if job.finished:
            raise Conflict(f"The job '{job_id}' has already finished ({job.status}).",
                           code="job_finished")
        if not await self.store.finish(job_id, None, "cancelled", error=JobCancelled().to_dict(),
                                       from_status=("pending", "running")):
            job = await self.get(principal, job_id)
            raise Conflict(f"The job '{job_id}' has already finished ({job.status}).",
                           code="job_finished")
        if self.pool is not None:
            self.pool.cancel_local(job_id)
        await self.finisher.finished(job_id)
        return await self.get(principal, job_id)

    async def delete(self, principal: Principal, job_id: str) -> None:
        job = await self.get(principal, job_id)
        if not job.finished:
            with contextlib.suppress(Conflict):
                await self.cancel(principal, job_id)
        await self.store.delete(job_id)
        self.signals.notify(job_id)

