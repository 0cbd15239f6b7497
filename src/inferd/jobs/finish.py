"""What follows a job's end, whoever ended it (a worker, a cancel, the sweep): wake its
followers, send its webhook, finish its batch when it was the last job."""

from __future__ import annotations

import logging
import time

from inferd.errors import (
    DeadlineExceeded,
    ErrorObject,
    InferdError,
    JobQuarantined,
    MaxAttemptsExceeded,
)
from inferd.jobs.batches import BatchFinalizer
from inferd.jobs.owners import Owners
from inferd.jobs.queue import QueuedJob
from inferd.jobs.signals import Signals
from inferd.jobs.webhooks import WebhookSender
from inferd.settings import JobSettings
from inferd.store.jobs import JobRecord, JobStore

log = logging.getLogger("inferd.jobs")


class Finisher:
    """Settles jobs no worker can claim and runs the after-effects of every finished job."""

    def __init__(self, store: JobStore, settings: JobSettings, signals: Signals,
                 webhooks: WebhookSender, owners: Owners, batches: BatchFinalizer) -> None:
        self.store = store
        self.settings = settings
        self.signals = signals
        self.webhooks = webhooks
        self.owners = owners
        self.batches = batches

    async def finished(self, job_id: str, known: JobRecord | None = None) -> None:
        """Wake followers, send the webhook, and finish the batch when this was its last job.

        ``known``: the job as its worker claimed it; one with neither webhook nor batch needs
        no second read.
        """
        self.signals.notify(job_id)
        if known is not None and not known.webhook_url and not known.batch_id:
            return
        job = await self.store.get(job_id)
        if job is None:
            return
        if job.webhook_url and job.webhook_state == "pending":
            secret = await self.owners.webhook_secret(job)
            self.webhooks.schedule(job, secret)
        if job.batch_id:
            await self.batches.maybe_finalize(job.batch_id)

    async def dead_lettered(self, job: QueuedJob, reason: str) -> None:
        """A job whose message the broker dead-lettered (delivered too often): it fails."""
        error: ErrorObject = {"message": reason, "type": "server_error", "param": None,
                              "code": "max_deliveries_exceeded"}
        if await self.store.finish(job.id, None, "failed", error=error, status_code=500,
                                   from_status=("pending", "running")):
            log.warning("job %s failed: %s", job.id, reason)
            await self.finished(job.id)

    async def unclaimable(self, job_id: str) -> None:
        """A job no worker could claim: fail it if it is past its deadline or its attempts,
        or quarantine it when the run its process died in was its last allowed crash."""
        job = await self.store.get(job_id)
        if job is None or job.finished:
            return
        now = time.time()
        error: InferdError
        from_status: tuple[str, ...]
        lapsed = job.status == "running" and (job.lease_expires_at or 0) < now
        if lapsed and job.crashes + 1 >= self.settings.max_crashes:
            error, from_status = JobQuarantined(job.crashes + 1), ("running",)
        elif job.status == "pending" and job.deadline_at is not None and job.deadline_at <= now:
            error, from_status = DeadlineExceeded(), ("pending",)
        elif job.attempts >= self.settings.max_attempts and (
                job.status == "pending" or (job.lease_expires_at or 0) < now):
            error = MaxAttemptsExceeded(job.attempts)
            from_status = ("pending", "running")
        else:
            return
        if await self.store.finish(job_id, None, "failed", error=error.to_dict(),
                                   status_code=error.status, from_status=from_status):
            await self.finished(job_id)
