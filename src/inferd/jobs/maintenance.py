"""Periodic work of the job system: re-enqueue lost jobs, enforce deadlines, finish batches,
and delete what is past its retention."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from typing import TYPE_CHECKING

from inferd.store.batches import BatchStore
from inferd.store.files import FileStore
from inferd.store.leases import LeaseStore

if TYPE_CHECKING:
    from inferd.jobs.service import JobService

log = logging.getLogger("inferd.jobs")

RETENTION_EVERY = 300.0


async def recover(service: JobService) -> int:
    """Enqueue every pending job and every running job whose lease lapsed (a dead worker's)."""
    running = service.pool.running if service.pool is not None else {}
    found = [job for job in await service.store.recoverable() if job.id not in running]
    for job in found:
        await service.enqueue(job)
    for batch_id in await BatchStore(service.db).unfinished():
        await service.batches.maybe_finalize(batch_id)
    return len(found)


async def resume_webhooks(service: JobService) -> None:
    """Webhooks a previous run did not get through."""
    for job in await service.store.pending_webhooks():
        if not service.webhooks.in_flight(job.id):
            principal = await service.principal_of(job)
            service.webhooks.schedule(job, principal.webhook_secret)


async def fail_overdue(service: JobService) -> None:
    for job_id in await service.store.overdue():
        await service.settle_unclaimable(job_id)


async def purge(service: JobService, now: float | None = None) -> dict[str, int]:
    """Delete finished jobs, batches and files older than the retention."""
    before = (now or time.time()) - service.settings.retention_seconds
    jobs = await service.store.purge_finished(before)
    batches = await BatchStore(service.db).purge_finished(before)
    files = await FileStore(service.db).purge_expired(now)
    return {"jobs": jobs, "batches": len(batches), "files": files}


async def run_forever(service: JobService) -> None:
    """Sweep every ``sweep_seconds`` while this process holds the cluster's maintenance lease
    (one process of a cluster sweeps; another takes over when it stops)."""
    last_purge = 0.0
    leases, holder = LeaseStore(service.db), f"sweep-{secrets.token_hex(6)}"
    ttl = max(10.0, 5 * service.settings.sweep_seconds)
    try:
        while True:
            await asyncio.sleep(service.settings.sweep_seconds)
            if await _holds(leases, holder, ttl):
                last_purge = await _sweep(service, last_purge)
    finally:  # hand the lease over at once on a clean stop
        with contextlib.suppress(Exception):
            await asyncio.shield(leases.release("maintenance", holder))


async def _holds(leases: LeaseStore, holder: str, ttl: float) -> bool:
    try:
        return await leases.acquire("maintenance", holder, ttl)
    except asyncio.CancelledError:
        raise
    except Exception:  # the database is away: try again on the next sweep
        log.warning("could not take the maintenance lease", exc_info=True)
        return False


async def _sweep(service: JobService, last_purge: float) -> float:
    """One sweep; returns when retention last ran."""
    try:
        await fail_overdue(service)
        await recover(service)
        if time.monotonic() - last_purge > RETENTION_EVERY:
            last_purge = time.monotonic()
            removed = await purge(service)
            if any(removed.values()):
                log.info("retention removed %s", removed)
    except asyncio.CancelledError:
        raise
    except Exception:  # the next sweep tries again
        log.exception("job maintenance failed")
    return last_purge
