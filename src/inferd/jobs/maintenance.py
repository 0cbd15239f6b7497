"""Periodic work of the job system: re-enqueue lost jobs, enforce deadlines, finish batches,
and delete what is past its retention.

Several processes may share one database; each sweeps only the jobs of the models it can run
now (``models``), so that no process claims, and fails, a job another process serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Collection

from inferd.jobs.batches import BatchService
from inferd.jobs.finish import Finisher
from inferd.jobs.owners import Owners
from inferd.jobs.queue import enqueue_each
from inferd.jobs.webhooks import WebhookSender
from inferd.settings import JobSettings
from inferd.store.jobs import JobRecord, JobStore
from inferd.store.leases import LeaseStore

log = logging.getLogger("inferd.jobs")

RETENTION_EVERY = 300.0


class Maintenance:
    """The sweep of one process."""

    def __init__(self, store: JobStore, settings: JobSettings, *, batches: BatchService,
                 webhooks: WebhookSender, owners: Owners, finisher: Finisher,
                 enqueue: Callable[[JobRecord], Awaitable[None]],
                 models: Callable[[], Collection[str] | None],
                 running: Callable[[], Collection[str]],
                 audit_prune: Callable[[float], Awaitable[int]] | None = None,
                 request_prune: Callable[[float], Awaitable[int]] | None = None) -> None:
        """``models``: the models whose jobs this process takes (None: all);
        ``running``: ids of the jobs this process runs right now."""
        self.store = store
        self.settings = settings
        self.batches = batches
        self.webhooks = webhooks
        self.owners = owners
        self.finisher = finisher
        self.enqueue = enqueue
        self.models = models
        self.running = running
        self.stopping = False  # set by ``stop``: the loop ends at its next turn
        # removes the audit events past their retention (``AuditLog.prune``), when given
        self.audit_prune = audit_prune
        # creates the request log's next partitions and removes what is past its retention
        # (``RequestLog.maintain``), when given
        self.request_prune = request_prune

    def stop(self) -> None:
        """End ``run_forever`` at its next turn (even if a cancellation is lost)."""
        self.stopping = True

    async def recover(self) -> int:
        """Enqueue the pending jobs and the running jobs whose lease lapsed (a dead worker's)
        of the models this process takes."""
        running = self.running()
        found = [job for job in await self.store.recoverable(self.models())
                 if job.id not in running]
        await enqueue_each(self.enqueue, found)
        for batch_id in await self.batches.store.unfinished():
            await self.batches.maybe_finalize(batch_id)
        return len(found)

    async def resume_webhooks(self) -> None:
        """Webhooks a previous run did not get through."""
        for job in await self.store.pending_webhooks():
            if not self.webhooks.in_flight(job.id):
                secret = await self.owners.webhook_secret(job)
                self.webhooks.schedule(job, secret)

    async def fail_overdue(self) -> None:
        for job_id in await self.store.overdue():
            await self.finisher.unclaimable(job_id)

    async def purge(self, now: float | None = None) -> dict[str, int]:
        """Delete finished jobs, batches and files older than the retention, and the audit
        events and the request log's records older than theirs."""
        now = now or time.time()
        before = now - self.settings.retention_seconds
        jobs = await self.store.purge_finished(before)
        batches = await self.batches.store.purge_finished(before)
        files = await self.batches.files.purge_expired(now)
        removed = {"jobs": jobs, "batches": len(batches), "files": files}
        if self.audit_prune is not None:
            removed["audit_events"] = await self.audit_prune(now)
        if self.request_prune is not None:
            removed["request_log"] = await self.request_prune(now)
        return removed

    async def run_forever(self, leases: LeaseStore | None = None) -> None:
        """Sweep every ``sweep_seconds``. With ``leases``, only the one process holding the
        lease for this set of models sweeps it (once per cluster, not once per process;
        another takes over when it stops)."""
        last_purge = 0.0
        holder = f"sweep-{secrets.token_hex(6)}"
        ttl = max(10.0, 5 * self.settings.sweep_seconds)
        try:
            while not self.stopping:
                await asyncio.sleep(self.settings.sweep_seconds)
                if leases is None or await self._holds(leases, holder, ttl):
                    last_purge = await self._sweep(last_purge)
        finally:  # hand the lease over at once on a clean stop
            if leases is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(leases.release(self._lease_name(), holder))

    def _lease_name(self) -> str:
        models = self.models()
        return "maintenance:" + ("*" if models is None else ",".join(sorted(models)))[:160]

    async def _holds(self, leases: LeaseStore, holder: str, ttl: float) -> bool:
        try:
            return await leases.acquire(self._lease_name(), holder, ttl)
        except asyncio.CancelledError:
            raise
        except Exception:  # the database is away: try again on the next sweep
            log.warning("could not take the maintenance lease", exc_info=True)
            return False

    async def _sweep(self, last_purge: float) -> float:
        """One sweep; returns when retention last ran."""
        try:
            await self.fail_overdue()
            await self.recover()
            if time.monotonic() - last_purge > RETENTION_EVERY:
                last_purge = time.monotonic()
                removed = await self.purge()
                if any(removed.values()):
                    log.info("retention removed %s", removed)
        except asyncio.CancelledError:
            raise
        except Exception:  # the next sweep tries again
            log.exception("job maintenance failed")
        return last_purge
