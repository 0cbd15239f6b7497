"""How a process's job system is put together for its role (README "Scaling out").

| role    | queue                      | runs jobs                                      |
|---------|----------------------------|------------------------------------------------|
| serve   | RabbitMQ if configured, else in-process | yes, every model                  |
| gateway | RabbitMQ if configured     | no with a broker; yes (remote replicas) without |
| worker  | RabbitMQ (required)        | yes: ``--model`` names, else every model it knows |
| engine  | RabbitMQ if configured     | no with a broker (workers do); yes without      |
"""

from __future__ import annotations

import logging

from inferd.auth.principal import Principal
from inferd.inference import Inference
from inferd.jobs.broker import RabbitQueue
from inferd.jobs.owners import PrincipalLookup
from inferd.jobs.queue import InProcessQueue, JobQueue, QueuedJob
from inferd.jobs.service import JobService
from inferd.routing.router import Router
from inferd.settings import JobSettings, Settings
from inferd.store.db import Database

log = logging.getLogger("inferd.jobs")


def build_queue(settings: Settings, jobs: JobSettings) -> JobQueue:
    """The queue this process publishes to and (if it runs jobs) consumes from."""
    if not settings.broker_url:
        if settings.role == "worker":
            raise ValueError("inferd worker needs a broker: set INFERD_BROKER_URL "
                             "(or RABBIT_MQ_HOST)")
        return InProcessQueue()
    return RabbitQueue(settings.broker_url, prefix=settings.broker_prefix,
                       prefetch=jobs.workers_for, max_deliveries=settings.broker_max_deliveries,
                       republish_seconds=max(jobs.lease_seconds, 2 * jobs.sweep_seconds),
                       group=settings.broker_group)


def runs_jobs(settings: Settings) -> bool:
    """Gateways and engines leave jobs to the workers when there is a broker."""
    return not (settings.role in ("gateway", "engine") and settings.broker_url)


def attach(service: JobService, settings: Settings) -> None:
    """Limit the workers to the models this process hosts; fail dead-lettered jobs."""
    if settings.role == "worker" and settings.worker_models:
        service.only = set(settings.worker_models)
    queue = service.queue
    if isinstance(queue, RabbitQueue):

        async def dead(job: QueuedJob, reason: str) -> None:
            error = {"message": reason, "type": "server_error", "param": None,
                     "code": "max_deliveries_exceeded"}
            if await service.store.finish(job.id, None, "failed", error=error, status_code=500,
                                          from_status=("pending", "running")):
                log.warning("job %s failed: %s", job.id, reason)
                await service.finisher.finished(job.id)

        queue.on_dead = dead


async def start_jobs(db: Database, router: Router, inference: Inference, settings: Settings,
                     principal_lookup: PrincipalLookup, open_mode: Principal) -> JobService:
    """The job service of this process's role, started."""
    service = JobService(db, router, inference, settings.jobs,
                         queue=build_queue(settings, settings.jobs),
                         run_workers=runs_jobs(settings),
                         principal_lookup=principal_lookup, open_mode=open_mode)
    attach(service, settings)
    await service.start()
    return service
