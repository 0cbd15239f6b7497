"""The job service: accept, find, cancel, delete and follow jobs, and run the in-process workers.

A job is committed before ``submit`` returns (the HTTP layer answers 202 after that); the queue
then carries only its id.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson

from inferd.auth.principal import ANONYMOUS, Principal
from inferd.errors import AuthenticationFailed, Conflict, NotFound, PermissionDenied
from inferd.images import ImageService
from inferd.inference import Inference
from inferd.jobs.config import JobSettings
from inferd.jobs.queue import InProcessQueue, JobQueue, QueuedJob
from inferd.jobs.requests import (
    check_webhook_url,
    idempotency_scope,
    job_object,
    parse_request,
    request_hash,
)
from inferd.jobs.webhooks import WebhookSender
from inferd.jobs.worker import WorkerPool
from inferd.routing.router import Router
from inferd.schemas.images import ImageGenerationRequest
from inferd.settings import Settings
from inferd.store.db import Database
from inferd.store.files import FileStore
from inferd.store.jobs import JobPage, JobRecord, JobStore, new_id
from inferd.store.repo import KeyValueStore

PrincipalLookup = Callable[[str], Awaitable[Principal | None]]
SSEvent = tuple[int | None, str, str]


class Signals:
    """Wake-ups for whoever follows a job in this process (SSE streams, waiters)."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}

    def event(self, key: str) -> asyncio.Event:
        """Take this before reading the state, then wait on it: no wake-up is missed."""
        return self._events.setdefault(key, asyncio.Event())

    def notify(self, key: str) -> None:
        event = self._events.pop(key, None)
        if event is not None:
            event.set()

    @staticmethod
    async def wait(event: asyncio.Event, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), seconds)


def _deadline_error() -> dict[str, Any]:
    return {"message": "The job did not start before its deadline.", "type": "timeout_error",
            "param": "deadline", "code": "deadline_exceeded"}


class JobService:
    """Everything the HTTP routes and the compat APIs do with jobs."""

    def __init__(self, db: Database, router: Router, inference: Inference,
                 settings: JobSettings, queue: JobQueue | None = None,
                 run_workers: bool = True) -> None:
        from inferd.jobs.batches import BatchService

        self.db, self.router, self.inference, self.settings = db, router, inference, settings
        self.store = JobStore(db)
        self.kv = KeyValueStore(db)
        self.queue: JobQueue = queue or InProcessQueue()
        self.signals = Signals()
        self.webhooks = WebhookSender(self.store, self.kv, settings)
        self.pool = WorkerPool(self, self.queue) if run_workers else None
        self.batches = BatchService(self)
        self.images = ImageService(inference, FileStore(db), settings.retention_seconds)
        self.principal_lookup: PrincipalLookup | None = None
        self._principals: dict[str, Principal] = {}
        self._maintenance: asyncio.Task[None] | None = None

    # -- life cycle -------------------------------------------------------------------------
    async def start(self) -> None:
        """Start workers, re-enqueue what a previous run left, resume webhooks, sweep."""
        from inferd.jobs import maintenance

        if self.pool is not None:
            for model in self.router.model_names():
                self.pool.ensure(model)
        await maintenance.recover(self)
        await maintenance.resume_webhooks(self)
        self._maintenance = asyncio.create_task(maintenance.run_forever(self))

    async def close(self) -> None:
        if self._maintenance is not None:
            self._maintenance.cancel()
            await asyncio.gather(self._maintenance, return_exceptions=True)
        if self.pool is not None:
            await self.pool.close()
        await self.webhooks.close()
        await self.queue.close()

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
        model = self.router.resolve(str(getattr(request, "model", "")))
        if not principal.may_use(model):
            raise PermissionDenied(f"This key may not use the model '{model}'.", param="model")
        stored = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
        job = JobRecord(
            id=new_id("job"), endpoint=endpoint, model=model, request=stored,
            request_hash=request_hash(endpoint, stored), owner=principal.key_id,
            owner_scope=principal.scope, source=source, priority=priority,
            idempotency_scope=(idempotency_scope(principal.key_id, idempotency_key)
                               if idempotency_key else None),
            deadline_at=deadline_at, webhook_url=check_webhook_url(webhook_url),
            meta={**(meta or {}), **({"metadata": metadata} if metadata else {})} or None)
        record, created = await self.store.insert(job)
        if not created:
            if record.request_hash != job.request_hash or record.endpoint != endpoint:
                raise Conflict("This idempotency key was already used with a different "
                               "request.", param="idempotency_key", code="idempotency_conflict")
            return record, False
        if principal.key_id is not None:
            self._principals[principal.key_id] = principal
        await self.enqueue(record)
        return record, True

    async def enqueue(self, job: JobRecord) -> None:
        if self.pool is not None:
            self.pool.ensure(job.model)
        await self.queue.put(QueuedJob(job.id, job.model, job.priority))

    # -- read -------------------------------------------------------------------------------
    async def get(self, principal: Principal, job_id: str) -> JobRecord:
        job = await self.store.get(job_id)
        if job is None or not (principal.is_admin or job.owner == principal.key_id):
            raise NotFound(f"No job with id '{job_id}'.", param="job_id", code="job_not_found")
        return job

    async def page(self, principal: Principal, *, status: str | None = None,
                   model: str | None = None, after: str | None = None, limit: int = 20,
                   source: str | None = None) -> JobPage:
        return await self.store.page(owner=principal.key_id, all_owners=principal.is_admin,
                                     status=status, model=model, after=after, limit=limit,
                                     source=source)

    async def wait(self, principal: Principal, job_id: str,
                   within: float | None = None) -> JobRecord:
        """Until the job has finished (or ``within`` seconds passed): its latest state."""
        end = None if within is None else time.monotonic() + within
        while True:
            changed = self.signals.event(job_id)
            job = await self.get(principal, job_id)
            left = 1.0 if end is None else min(1.0, end - time.monotonic())
            if job.finished or left <= 0:
                return job
            await self.signals.wait(changed, left)

    async def events(self, principal: Principal, job_id: str,
                     after: int = 0) -> AsyncIterator[SSEvent]:
        """The job's events after sequence number ``after``, live until it finishes, then a
        last event named after its final status carrying the whole job."""
        await self.get(principal, job_id)
        last, said = after, ""
        while True:
            changed = self.signals.event(job_id)
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
            await self.signals.wait(changed, 1.0)

    # -- change -----------------------------------------------------------------------------
    async def cancel(self, principal: Principal, job_id: str) -> JobRecord:
        job = await self.get(principal, job_id)
        if job.finished:
            raise Conflict(f"The job '{job_id}' has already finished ({job.status}).",
                           code="job_finished")
        error = {"message": "The job was cancelled.", "type": "cancelled", "param": None,
                 "code": "cancelled"}
        if not await self.store.finish(job_id, None, "cancelled", error=error,
                                       from_status=("pending", "running")):
            job = await self.get(principal, job_id)
            raise Conflict(f"The job '{job_id}' has already finished ({job.status}).",
                           code="job_finished")
        if self.pool is not None:
            self.pool.cancel_local(job_id)
        await self.after_finish(job_id)
        return await self.get(principal, job_id)

    async def delete(self, principal: Principal, job_id: str) -> None:
        job = await self.get(principal, job_id)
        if not job.finished:
            with contextlib.suppress(Conflict):
                await self.cancel(principal, job_id)
        await self.store.delete(job_id)
        self.signals.notify(job_id)

    # -- called by workers and the sweep ----------------------------------------------------
    async def principal_of(self, job: JobRecord, strict: bool = False) -> Principal:
        """Who a job runs as: its submitter's key as it is now.

        ``strict`` (running the job) raises ``AuthenticationFailed`` when that key was revoked;
        otherwise (signing its webhook) the job's own record of its owner is used.
        """
        if job.owner is None:
            return ANONYMOUS
        if self.principal_lookup is not None:
            try:
                found = await self.principal_lookup(job.owner)
            except AuthenticationFailed:
                if strict:
                    raise
                found = None
            if found is not None:
                return found
        return self._principals.get(job.owner) or Principal(
            key_id=job.owner, scope="admin" if job.owner_scope == "admin" else "user")

    async def settle_unclaimable(self, job_id: str) -> None:
        """A job no worker could claim: fail it if it is past its deadline or its attempts."""
        job = await self.store.get(job_id)
        if job is None or job.finished:
            return
        now = time.time()
        if job.status == "pending" and job.deadline_at is not None and job.deadline_at <= now:
            done = await self.store.finish(job_id, None, "failed", error=_deadline_error(),
                                           status_code=408, from_status=("pending",))
        elif job.attempts >= self.settings.max_attempts and (
                job.status == "pending" or (job.lease_expires_at or 0) < now):
            done = await self.store.finish(
                job_id, None, "failed", status_code=500, from_status=("pending", "running"),
                error={"message": f"The job failed {job.attempts} times (its worker stopped).",
                       "type": "server_error", "param": None, "code": "max_attempts_exceeded"})
        else:
            return
        if done:
            await self.after_finish(job_id)

    async def after_finish(self, job_id: str) -> None:
        """Wake followers, send the webhook, and finish the batch when this was its last job."""
        self.signals.notify(job_id)
        job = await self.store.get(job_id)
        if job is None:
            return
        if job.webhook_url and job.webhook_state == "pending":
            principal = await self.principal_of(job)
            self.webhooks.schedule(job, principal.webhook_secret)
        if job.batch_id:
            await self.batches.maybe_finalize(job.batch_id)


async def start_jobs(db: Database, router: Router, inference: Inference,
                     settings: Settings) -> JobService:
    """The job service of ``inferd serve``: in-process queue and workers, started."""
    service = JobService(db, router, inference, JobSettings.load(settings.config_file))
    await service.start()
    return service
