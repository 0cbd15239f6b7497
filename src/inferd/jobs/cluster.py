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
from collections.abc import Awaitable, Callable, Collection

from inferd.auth.principal import Principal
from inferd.images import ImageService
from inferd.inference import Inference
from inferd.jobs.batches import BatchFinalizer, BatchService
from inferd.jobs.caps import PendingCaps
from inferd.jobs.dispatch import Dispatch
from inferd.jobs.finish import Finisher
from inferd.jobs.maintenance import Maintenance
from inferd.jobs.owners import Owners, PrincipalLookup
from inferd.jobs.queue import DeadHandler, InProcessQueue, JobQueue
from inferd.jobs.runner import EventLog, Outcome, run_job
from inferd.jobs.service import JobService
from inferd.jobs.signals import Signals
from inferd.jobs.webhooks import WebhookSender
from inferd.jobs.worker import WorkerPool
from inferd.lifecycle import Drain
from inferd.routing.router import Router
from inferd.settings import BrokerSettings, ClusterSettings, JobSettings
from inferd.store.batches import BatchStore
from inferd.store.db import Database
from inferd.store.files import FileStore
from inferd.store.job_inserts import GroupInserter
from inferd.store.jobs import JobRecord, JobStore
from inferd.store.leases import LeaseStore
from inferd.store.repo import KeyValueStore

log = logging.getLogger("inferd.jobs")

# Builds the queue, given what fails a job whose message was dead-lettered.
QueueFactory = Callable[[DeadHandler], JobQueue]


def build_queue(settings: BrokerSettings, jobs: JobSettings, on_dead: DeadHandler, *,
                role: str) -> JobQueue:
    """The queue this process (of ``role``) publishes to and (if it runs jobs) consumes from."""
    if not settings.broker_url:
        if role == "worker":
            raise ValueError("inferd worker needs a broker: set INFERD_BROKER_URL "
                             "(or RABBIT_MQ_HOST)")
        return InProcessQueue()
    # aio_pika is imported only by a process that has a broker
    from inferd.jobs.broker import RabbitQueue

    return RabbitQueue(settings.broker_url, prefix=settings.broker_prefix,
                       prefetch=jobs.workers_for, max_deliveries=settings.broker_max_deliveries,
                       republish_seconds=max(jobs.lease_seconds, 2 * jobs.sweep_seconds),
                       group=settings.broker_group, on_dead=on_dead)


def runs_jobs(role: str, broker: BrokerSettings) -> bool:
    """Gateways and engines leave jobs to the workers when there is a broker."""
    return not (role in ("gateway", "engine") and broker.broker_url)


def in_process_queue(_on_dead: DeadHandler) -> JobQueue:
    return InProcessQueue()


def build_jobs(db: Database, router: Router, inference: Inference, settings: JobSettings, *,
               open_mode: Principal, principal_lookup: PrincipalLookup | None = None,
               queue: QueueFactory = in_process_queue, run_workers: bool = True,
               only: Collection[str] | None = None, drain: Drain | None = None,
               audit_prune: Callable[[float], Awaitable[int]] | None = None) -> JobService:
    """The job service and its parts, each handed what it uses (nothing is set afterwards).

    ``queue`` builds the queue from the dead-letter handler; ``run_workers``: this process
    runs jobs (else it only publishes them); ``only``: the models it may run (None: any its
    router can run); ``drain``: the process's stop, which the workers obey;
    ``principal_lookup`` finds a job's owner by key id (jobs run as their
    submitter, also after a restart); ``audit_prune`` removes the audit events past their
    retention (the maintenance sweep calls it).
    """
    store = JobStore(db)
    signals = Signals()
    owners = Owners(principal_lookup, open_mode)
    webhooks = WebhookSender(store, KeyValueStore(db), settings)
    caps = PendingCaps(store, settings)
    images = ImageService(inference, FileStore(db), settings.retention_seconds)
    finalizer = BatchFinalizer(BatchStore(db), store, settings)
    finisher = Finisher(store, settings, signals, webhooks, owners, finalizer)
    job_queue = queue(finisher.dead_lettered)

    async def run(job: JobRecord, events: EventLog) -> Outcome:
        # the owner is resolved inside the job: a revoked key fails its job, not the worker
        return await run_job(inference, job, owners.of(job), events, images)

    pool = (WorkerPool(store, job_queue, settings, signals, run, finisher,
                       spill=inference.metering.recorder.record_many, drain=drain)
            if run_workers else None)
    dispatch = Dispatch(store, job_queue, settings, router, pool, only)
    batches = BatchService(finalizer, FileStore(db), resolve=router.resolve,
                           enqueue=dispatch.enqueue, caps=caps)
    maintenance = Maintenance(store, settings, batches=batches, webhooks=webhooks,
                              owners=owners, finisher=finisher, enqueue=dispatch.enqueue,
                              models=dispatch.taken_models, running=dispatch.running,
                              audit_prune=audit_prune,
                              request_prune=inference.metering.requests.maintain)
    return JobService(router=router, inference=inference, settings=settings, store=store,
                      inserts=GroupInserter(store), dispatch=dispatch, signals=signals,
                      owners=owners, webhooks=webhooks, caps=caps, batches=batches,
                      finisher=finisher, maintenance=maintenance, images=images,
                      leases=LeaseStore(db))


async def start_jobs(db: Database, router: Router, inference: Inference, settings: JobSettings,
                     principal_lookup: PrincipalLookup, open_mode: Principal,
                     drain: Drain,
                     audit_prune: Callable[[float], Awaitable[int]] | None = None, *,
                     broker: BrokerSettings, cluster: ClusterSettings) -> JobService:
    """The job service of this process's role (``cluster.role``), started: a worker started
    with ``--model`` runs those models only; a dead-lettered job fails."""
    role = cluster.role
    only = cluster.worker_models if role == "worker" and cluster.worker_models else None
    service = build_jobs(db, router, inference, settings, open_mode=open_mode,
                         principal_lookup=principal_lookup,
                         queue=lambda on_dead: build_queue(broker, settings, on_dead, role=role),
                         run_workers=runs_jobs(role, broker), only=only, drain=drain,
                         audit_prune=audit_prune)
    await service.start()
    return service
