"""Everything a running inferd holds, built in one place and closed in reverse order."""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from functools import partial

from inferd.auth.principal import Principal
from inferd.changes import ChangeBus, Handler
from inferd.engines import build_engine
from inferd.errors import InferdError
from inferd.inference import Inference
from inferd.jobs.cluster import follow_models
from inferd.jobs.service import JobService, start_jobs
from inferd.roles import start_role
from inferd.routing.catalog import ReplicaCatalog, start_catalog
from inferd.routing.router import Replica, Router
from inferd.settings import Settings
from inferd.store.db import Database
from inferd.store.replicas import ReplicaStore

log = logging.getLogger("inferd")


@dataclass
class Services:
    """The live objects of one process; the HTTP layer finds them on ``app.state``."""

    settings: Settings
    db: Database
    router: Router
    inference: Inference
    started_at: int = field(default_factory=lambda: int(time.time()))
    stack: AsyncExitStack = field(default_factory=AsyncExitStack)
    catalog: ReplicaCatalog | None = None  # stored models/replicas, health checks
    jobs: JobService | None = None  # durable jobs, batches; in-process queue + workers

    @classmethod
    async def start(cls, settings: Settings) -> Services:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        db = Database(settings.resolved_database_url())
        await prepare_schema(db, settings)
        router = Router(max_attempts=settings.router_max_attempts)
        services = cls(settings=settings, db=db, router=router,
                       inference=await Inference.start(settings, db, router))
        services.stack.push_async_callback(db.close)
        # keys, limits, usage recorder: closed before the database (flushes usage)
        services.stack.push_async_callback(services.inference.close)
        engines = [(spec, build_engine(spec)) for spec in settings.all_models()]
        # Load models one after another: on two cores parallel loads only thrash.
        for spec, engine in engines:
            log.info("loading model %s (%s)", spec.name, spec.kind)
            await engine.start()
            services.stack.push_async_callback(engine.close)
            router.add(Replica(id=f"local:{spec.name}", model=spec.name, engine=engine),
                       aliases=spec.aliases)
        services.catalog = await start_catalog(router, ReplicaStore(db), settings)
        services.stack.push_async_callback(services.catalog.close)
        services.connect_changes()
        await start_role(services, {spec.name: engine for spec, engine in engines})
        services.jobs = await start_jobs(db, router, services.inference, settings)
        services.stack.push_async_callback(services.jobs.close)
        if settings.role == "worker" and not settings.worker_models:
            follow = asyncio.create_task(
                follow_models(services.jobs, settings.health_check_interval))
            services.stack.callback(follow.cancel)
        services.connect_jobs_to_keys()
        return services

    def connect_changes(self) -> None:
        """With Redis: key and catalogue changes reach every process at once (pub/sub)."""
        if not self.settings.redis_url or self.catalog is None:
            return
        bus = ChangeBus(self.settings.redis_url, self.settings.redis_prefix)
        handlers: dict[str, Handler] = {"catalog": self.catalog.sync}
        self.catalog.announce = partial(bus.publish, "catalog")
        keys = self.inference.keys
        if keys is not None:
            handlers["keys"] = keys.refresh
            keys.announce = partial(bus.publish, "keys")
        bus.listen(handlers)
        self.stack.push_async_callback(bus.close)

    def connect_jobs_to_keys(self) -> None:
        """Jobs run as their submitter's key (limits, allow-list, webhook secret), also after a
        restart; the job queue's depth is a metric."""
        jobs, keys = self.jobs, self.inference.keys
        if jobs is None:
            return
        self.inference.metrics.register_gauge("inferd_queue_depth",
                                              "Jobs waiting in this process's queue.",
                                              lambda: float(jobs.queue.depth()))
        if keys is None:
            return

        async def owner(key_id: str) -> Principal:
            return keys.owner(key_id)

        jobs.principal_lookup = owner

    async def close(self) -> None:
        await asyncio.shield(self.stack.aclose())


class SchemaNotMigrated(InferdError):
    """A shared database whose schema is older than this code."""


async def prepare_schema(db: Database, settings: Settings) -> None:
    """``serve`` (and any role on a SQLite file) migrates by itself; the roles of a cluster
    on a shared database refuse an old schema, so that one step (``inferd migrate``) decides
    when it changes."""
    if settings.role == "serve" or db.dialect == "sqlite":
        await db.migrate()
        return
    if await db.pending_migrations():
        await db.close()
        raise SchemaNotMigrated(
            f"The {db.dialect} database schema is not up to date: run `inferd migrate` "
            "(with the same INFERD_DATABASE_URL) before starting inferd "
            f"{settings.role}.")
