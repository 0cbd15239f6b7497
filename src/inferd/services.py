"""Everything a running inferd holds, built in one place and closed in reverse order."""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from inferd.audit import AuditLog
from inferd.auth.budget_stats import TeamBudgets
from inferd.auth.budget_webhooks import BudgetWebhook
from inferd.auth.limits import BudgetAlerts, no_event
from inferd.auth.oidc import OidcClient, new_http
from inferd.auth.service import Auth
from inferd.auth.sso import Sso
from inferd.control import Control, build_control
from inferd.engines import build_engine
from inferd.engines.residency import Residency
from inferd.errors import InferdError
from inferd.inference import Inference, build_limiter
from inferd.jobs.cluster import start_jobs
from inferd.jobs.service import JobService
from inferd.jobs.stats import QueueStats
from inferd.lifecycle import Drain
from inferd.metering import Metering
from inferd.metrics import Metrics
from inferd.roles import queue_engines, start_role
from inferd.routing.catalog import ReplicaCatalog, start_catalog
from inferd.routing.fairqueue import Queueing
from inferd.routing.router import Replica, Router
from inferd.settings import BrokerSettings, BudgetSettings, JobSettings, Settings, SsoSettings
from inferd.store.audit import AuditStore
from inferd.store.db import Database, open_database
from inferd.store.replicas import ReplicaStore
from inferd.tracing import Tracer

if TYPE_CHECKING:
    from inferd.changes import ChangeBus

log = logging.getLogger("inferd")


@dataclass
class Services:
    """The live objects of one process; the HTTP layer finds them on ``app.state``.

    ``auth``: who is calling (keys, key admin, policy); ``metering``: metrics and usage;
    ``inference``: a request through limits, router and engine; ``catalog``: stored models
    and replicas, health checks; ``jobs``: durable jobs and batches with their workers;
    ``control``: the services over stored state the routes use (``inferd.control``);
    ``residency``: the budget of loaded in-process models; ``drain``: the process's stop.
    """

    settings: Settings
    db: Database
    router: Router
    auth: Auth
    metering: Metering
    inference: Inference
    catalog: ReplicaCatalog
    jobs: JobService
    control: Control
    residency: Residency
    drain: Drain
    stack: AsyncExitStack
    started_at: int = field(default_factory=lambda: int(time.time()))
    # OpenID Connect single sign-on (``inferd.auth.sso``); None: not configured
    sso: Sso | None = None

    @classmethod
    async def start(cls, settings: Settings, drain: Drain | None = None,
                    tracer: Tracer | None = None) -> Services:
        """Build and start every part; ``drain``: the process's stop (``inferd.lifecycle``);
        ``tracer``: what traces requests and jobs (None: nothing is traced)."""
        stack = AsyncExitStack()
        try:
            return await cls._start(settings, stack, drain or Drain(), tracer)
        except BaseException:
            await stack.aclose()
            raise

    @classmethod
    async def _start(cls, settings: Settings, stack: AsyncExitStack,
                     drain: Drain, tracer: Tracer | None) -> Services:
        settings.storage.data_dir.mkdir(parents=True, exist_ok=True)
        db = open_database(settings.storage)
        stack.push_async_callback(db.close)
        if not db.secrets.encrypts:
            log.warning("INFERD_SECRET_KEY is not set: replica credentials and webhook "
                        "secrets are stored in the database in plaintext")
        role = settings.cluster.role
        await prepare_schema(db, role)
        # changes of the control plane, recorded on the request that makes them
        audit = AuditLog(AuditStore(db), retention_days=settings.audit.audit_retention_days,
                         failure_window=settings.audit.audit_failure_window_seconds)
        audit.start()
        stack.push_async_callback(audit.close)
        # usage records and limits are closed after the keys and before the database
        metering = await Metering.start(settings.usage, db, data_dir=settings.storage.data_dir,
                                        requests=settings.requests,
                                        log_requests=settings.logging.log_requests)
        stack.push_async_callback(metering.close)
        routing = settings.router
        router = Router(max_attempts=routing.router_max_attempts, routing=routing.routing,
                        spill=routing.routing_spill, slack=routing.routing_slack,
                        queueing=Queueing.of(settings.queue),
                        capacity=settings.queue.replica_capacity,
                        metrics=metering.metrics, tracer=tracer)
        metering.watch(router)
        # closed after the limiter, whose last settled costs may give events
        webhook = await start_budget_webhook(settings.budget, settings.jobs, metering.metrics,
                                             stack)
        limiter = build_limiter(settings.limits, settings.broker, BudgetAlerts(
            metering.metrics, webhook.send if webhook is not None else no_event))
        inference = Inference(router, metering, limiter=limiter,
                              tracer=tracer)
        stack.push_async_callback(inference.close)
        bus = change_bus(settings.broker, stack)
        throttled = metering.metrics.child("rate_limited", "too_many_failed_authentications")
        auth = await Auth.start(settings.access, db, cluster=settings.cluster,
                                host=settings.http.host, on_load=inference.seed_budgets,
                                on_failure=metering.metrics.auth_failures.inc,
                                on_throttled=throttled.inc,
                                announce=bus.announcer("keys") if bus else None,
                                audit=audit)
        stack.push_async_callback(auth.close)
        sso = await start_sso(settings.sso, role, db, auth, audit, stack)
        # the budget of loaded models every in-process engine of this process counts against
        models = settings.engines.all_models()
        residency = Residency(settings.engines.max_loaded_models)
        engines = [(spec, build_engine(spec, residency)) for spec in models]
        # Load models one after another: on two cores parallel loads only thrash.
        for spec, engine in engines:
            log.info("loading model %s (%s)", spec.name, spec.kind)
            await engine.start()
            stack.push_async_callback(engine.close)
            router.add(Replica(id=f"local:{spec.name}", model=spec.name, engine=engine,
                               cooldown_base=routing.replica_cooldown_base,
                               cooldown_max=routing.replica_cooldown_max),
                       aliases=spec.aliases)
        catalog = await start_catalog(router, ReplicaStore(db), routing, models=models,
                                      announce=bus.announcer("catalog") if bus else None,
                                      queue_engine=queue_engines(settings.broker, role, stack),
                                      prices=metering.prices, remote=role != "engine")
        stack.push_async_callback(catalog.close)
        if bus is not None:
            bus.listen({"catalog": lambda _: catalog.sync(), "keys": auth.keys.apply_announcement})
            stack.push_async_callback(bus.close)  # stops listening before the catalog closes
        await start_role(settings.cluster, settings.broker, settings.jobs,
                         settings.queued_generate, db, catalog, stack,
                         {s.name: e for s, e in engines}, tracer)
        # Jobs run as their submitter's key (limits, allow-list, webhook secret), also after
        # a restart.
        jobs = await start_jobs(db, router, inference, settings.jobs,
                                principal_lookup=auth.owner, open_mode=auth.open_mode,
                                drain=drain, audit_prune=audit.prune, broker=settings.broker,
                                cluster=settings.cluster)
        stack.push_async_callback(jobs.close)
        metering.metrics.register_gauge("inferd_queue_depth",
                                        "Jobs waiting in this process's queue.",
                                        lambda: float(jobs.queue.depth()))
        QueueStats(jobs.store, router).register(metering.metrics)
        TeamBudgets(metering.store).register(metering.metrics)
        loop = asyncio.get_running_loop()  # read from the scrape's thread too
        metering.metrics.register_gauge(
            "inferd_asyncio_tasks", "Tasks on the event loop; growth under steady load is a "
            "leak (bench/soak.py watches it).", lambda: float(len(asyncio.all_tasks(loop))))
        control = build_control(settings.limits, settings.cluster, db, catalog, inference, jobs,
                                audit)
        return cls(settings=settings, db=db, router=router, auth=auth, metering=metering,
                   inference=inference, catalog=catalog, jobs=jobs, control=control,
                   residency=residency, drain=drain, stack=stack, sso=sso)

    async def close(self) -> None:
        await asyncio.shield(self.stack.aclose())


class SchemaNotMigrated(InferdError):
    """A shared database whose schema is older than this code."""


async def prepare_schema(db: Database, role: str) -> None:
    """``serve`` (and any role on a SQLite file) migrates by itself; the roles of a cluster
    on a shared database refuse an old schema, so that one step (``inferd migrate``) decides
    when it changes."""
    if role == "serve" or db.dialect == "sqlite":
        await db.migrate()
        return
    if await db.pending_migrations():
        raise SchemaNotMigrated(
            f"The {db.dialect} database schema is not up to date: run `inferd migrate` "
            "(with the same INFERD_DATABASE_URL) before starting inferd "
            f"{role}.")


async def start_sso(settings: SsoSettings, role: str, db: Database, auth: Auth,
                    audit: AuditLog, stack: AsyncExitStack) -> Sso | None:
    """Single sign-on with the provider of ``oidc_issuer`` (None when not set; not on an
    engine, which serves gateways only)."""
    if not settings.oidc_issuer or role == "engine":
        return None
    http = new_http()
    stack.push_async_callback(http.aclose)
    return await Sso.start(settings, db, auth, audit, OidcClient(settings, http))


async def start_budget_webhook(settings: BudgetSettings, jobs: JobSettings, metrics: Metrics,
                               stack: AsyncExitStack) -> BudgetWebhook | None:
    """The budget webhook (``budget_webhook_url``, signed with ``budget_webhook_secret``,
    retried as ``jobs`` retries job webhooks; None when not set)."""
    if not settings.budget_webhook_url:
        return None
    webhook = BudgetWebhook(settings.budget_webhook_url, settings.budget_webhook_secret,
                            jobs, metrics, settings.budget_webhook_queue)
    await webhook.check()
    webhook.start()
    stack.push_async_callback(webhook.close)
    metrics.register_gauge("inferd_budget_webhooks_pending",
                           "Money budget events waiting for the budget webhook.",
                           lambda: float(webhook.pending()))
    return webhook


def change_bus(settings: BrokerSettings, stack: AsyncExitStack) -> ChangeBus | None:
    """With Redis: key and catalogue changes reach every process at once (pub/sub)."""
    if not settings.redis_url:
        return None
    # the Redis client is imported by the processes configured with Redis only
    from inferd.changes import ChangeBus

    bus = ChangeBus(settings.redis_url, settings.redis_prefix)
    stack.push_async_callback(bus.close)  # closing it twice is harmless
    return bus
