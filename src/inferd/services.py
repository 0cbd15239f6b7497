"""Everything a running inferd holds, built in one place and closed in reverse order."""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

from inferd.auth.service import Auth
from inferd.engines import build_engine
from inferd.inference import Inference, build_limiter
from inferd.jobs.service import JobService, start_jobs
from inferd.metering import Metering
from inferd.routing.catalog import ReplicaCatalog, start_catalog
from inferd.routing.router import Replica, Router
from inferd.settings import Settings
from inferd.store.db import Database
from inferd.store.replicas import ReplicaStore

log = logging.getLogger("inferd")


@dataclass
class Services:
    """The live objects of one process; the HTTP layer finds them on ``app.state``.

    ``auth``: who is calling (keys, key admin, policy); ``metering``: metrics and usage;
    ``inference``: a request through limits, router and engine; ``catalog``: stored models
    and replicas, health checks; ``jobs``: durable jobs and batches with their workers.
    """

    settings: Settings
    db: Database
    router: Router
    auth: Auth
    metering: Metering
    inference: Inference
    catalog: ReplicaCatalog
    jobs: JobService
    stack: AsyncExitStack
    started_at: int = field(default_factory=lambda: int(time.time()))

    @classmethod
    async def start(cls, settings: Settings) -> Services:
        stack = AsyncExitStack()
        try:
            return await cls._start(settings, stack)
        except BaseException:
            await stack.aclose()
            raise

    @classmethod
    async def _start(cls, settings: Settings, stack: AsyncExitStack) -> Services:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        db = Database(settings.resolved_database_url())
        await db.migrate()
        stack.push_async_callback(db.close)
        router = Router(max_attempts=settings.router_max_attempts)
        # usage records and limits are closed after the keys and before the database
        metering = await Metering.start(settings, db)
        stack.push_async_callback(metering.close)
        metering.watch(router)
        inference = Inference(router, metering, limiter=build_limiter(settings))
        stack.push_async_callback(inference.close)
        auth = await Auth.start(settings, db, on_load=inference.seed_budgets,
                                on_failure=metering.metrics.auth_failures.inc)
        stack.push_async_callback(auth.close)
        engines = [(spec, build_engine(spec)) for spec in settings.all_models()]
        # Load models one after another: on two cores parallel loads only thrash.
        for spec, engine in engines:
            log.info("loading model %s (%s)", spec.name, spec.kind)
            await engine.start()
            stack.push_async_callback(engine.close)
            router.add(Replica(id=f"local:{spec.name}", model=spec.name, engine=engine),
                       aliases=spec.aliases)
        catalog = await start_catalog(router, ReplicaStore(db), settings)
        stack.push_async_callback(catalog.close)
        # Jobs run as their submitter's key (limits, allow-list, webhook secret), also after
        # a restart.
        jobs = await start_jobs(db, router, inference, settings, principal_lookup=auth.owner)
        stack.push_async_callback(jobs.close)
        metering.metrics.register_gauge("inferd_queue_depth",
                                        "Jobs waiting in this process's queue.",
                                        lambda: float(jobs.queue.depth()))
        return cls(settings=settings, db=db, router=router, auth=auth, metering=metering,
                   inference=inference, catalog=catalog, jobs=jobs, stack=stack)

    async def close(self) -> None:
        await asyncio.shield(self.stack.aclose())
