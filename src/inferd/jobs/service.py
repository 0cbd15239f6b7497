"""The job service: accept, find, cancel, delete and follow jobs, and run the in-process workers.

A job is committed before ``submit`` returns (the HTTP layer answers 202 after that); the queue
then carries only its id.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import orjson

from inferd.auth.principal import Principal
from inferd.errors import Conflict, JobCancelled, NotFound
from inferd.ids import new_id
from inferd.images import ImageService
from inferd.inference import Inference
from inferd.jobs.batches import BatchService
from inferd.jobs.caps import PendingCaps
from inferd.jobs.dispatch import Dispatch
from inferd.jobs.finish import Finisher
from inferd.jobs.maintenance import Maintenance
from inferd.jobs.owners import Owners
from inferd.jobs.queue import JobQueue
from inferd.jobs.requests import (
    check_webhook_url,
    idempotency_scope,
    job_object,
    parse_request,
    request_hash,
)
from inferd.jobs.signals import Signals
from inferd.jobs.webhooks import WebhookSender
from inferd.jsontypes import JsonObject
from inferd.routing.router import Router
from inferd.schemas.images import ImageGenerationRequest
from inferd.settings import JobSettings
from inferd.store.job_inserts import GroupInserter
from inferd.store.jobs import JobMeta, JobPage, JobRecord, JobStore
from inferd.store.leases import LeaseStore
from inferd.tasks import cancel_and_wait
from inferd.tracing import TRACEPARENT, current_traceparent

SSEvent = tuple[int | None, str, str]
# The jobs of background responses: private to their key, as the responses are (no admin
# override, README "Authorization"); any other job an admin may see.
PRIVATE_SOURCE = "responses"


class JobService:
    """Everything the HTTP routes and the compat APIs do with jobs.

    Its parts are built by the composition root (``inferd.jobs.cluster.build_jobs``), each
    handed only what it uses; none of them knows the service. With a worker pool
    (``dispatch.pool``) this process runs jobs, of the models its router can run now only:
    other processes sharing the database run the rest.
    """

    def __init__(self, *, router: Router, inference: Inference, settings: JobSettings,
                 store: JobStore, inserts: GroupInserter, dispatch: Dispatch, signals: Signals,
                 owners: Owners, webhooks: WebhookSender, caps: PendingCaps,
                 batches: BatchService, finisher: Finisher, maintenance: Maintenance,
                 images: ImageService, leases: LeaseStore) -> None:
        self.router, self.inference, self.settings = router, inference, settings
        self.store = store
        self.inserts = inserts
        self.dispatch = dispatch
        self.queue: JobQueue = dispatch.queue
        self.pool = dispatch.pool
        self.signals = signals
        self.owners = owners
        self.webhooks = webhooks
        self.caps = caps
        self.batches = batches
        self.finisher = finisher
        self.maintenance = maintenance
        self.images = images
        self.leases = leases
        self._sweep: asyncio.Task[None] | None = None

    # -- life cycle -------------------------------------------------------------------------
    async def start(self) -> None:
        """Start workers, re-enqueue what a previous run left, resume webhooks, sweep."""
        self.dispatch.start_workers()
        await self.maintenance.recover()
        await self.maintenance.resume_webhooks()
        self._sweep = asyncio.create_task(self.maintenance.run_forever(self.leases))

    async def close(self) -> None:
        self.maintenance.stop()  # ends its loop even if a cancellation is lost
        if self._sweep is not None:
            await cancel_and_wait([self._sweep], what="job sweep")
        if self.pool is not None:
            await self.pool.close()
        await self.webhooks.close()
        await self.queue.close()

    def runnable(self, model: str) -> bool:
        """Whether this process can run ``model`` now (its router has a replica of it)."""
        return self.dispatch.runnable(model)

    async def enqueue(self, job: JobRecord, *, premarked: bool = False) -> None:
        """Hand a committed job to the workers (``Dispatch.enqueue``)."""
        await self.dispatch.enqueue(job, premarked=premarked)

    # -- submit -----------------------------------------------------------------------------
    async def submit(self, principal: Principal, endpoint: str, body: JsonObject, *,
                     priority: int = 0, deadline_at: float | None = None,
                     webhook_url: str | None = None, metadata: dict[str, str] | None = None,
                     idempotency_key: str | None = None, source: str = "api",
                     meta: JobMeta | None = None) -> tuple[JobRecord, bool]:
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
        kept: JobMeta = meta.copy() if meta else {}
        if self.inference.tracer is not None:  # the worker's span joins the submitter's trace
            traceparent = current_traceparent()
            if traceparent is not None:
                kept[TRACEPARENT] = traceparent
        if metadata:
            kept["metadata"] = metadata
        job = JobRecord(
            id=new_id("job"), endpoint=endpoint, model=model, request=stored,
            request_hash=request_hash(endpoint, stored), owner=principal.key_id,
            owner_scope=principal.scope, source=source, priority=priority,
            idempotency_scope=(idempotency_scope(principal.key_id, idempotency_key)
                               if idempotency_key else None),
            deadline_at=deadline_at,
            webhook_url=await check_webhook_url(webhook_url, self.webhooks.allow),
            meta=kept or None)
        # Published to a broker, the job is stored already marked queued: one statement less
        # per submission than marking it once the broker confirmed (a failed publish unmarks
        # it; a gateway that dies between commit and publish leaves the mark to lapse).
        premarked = self.dispatch.publishes(model)
        if premarked:
            job.lease_expires_at = self.dispatch.queued_until()
        record, created = await self.inserts.insert(job)
        if not created:
            if record.request_hash != job.request_hash or record.endpoint != endpoint:
                raise Conflict("This idempotency key was already used with a different "
                               "request.", param="idempotency_key", code="idempotency_conflict")
            return record, False
        self.owners.remember(principal)
        await self.enqueue(record, premarked=premarked)
        return record, True

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

