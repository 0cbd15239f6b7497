"""What each role adds to the services every process has (README "Scaling out").

- ``gateway`` / ``serve`` with a broker: ``queue`` replicas (workers hosting a model) become
  routable, so sync requests and streams reach models only workers host.
- ``engine``: registers itself as an ``http`` replica of its models, with a heartbeat: through
  the gateway at ``INFERD_GATEWAY_URL`` with its own key, else in the shared database.
- ``worker --model``: answers sync requests for its models over the broker and registers a
  ``queue`` replica of each, with a heartbeat; with ``INFERD_QUEUED_GENERATE_QUEUE`` it also
  answers the queued generate system's tasks (``inferd.engines.queued_generate_worker``).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from contextlib import AsyncExitStack

from inferd.engines.base import Engine
from inferd.routing.catalog import ReplicaCatalog
from inferd.routing.registration import EngineRegistration
from inferd.routing.standby import ensure_standby
from inferd.settings import (
    BrokerSettings,
    ClusterSettings,
    JobSettings,
    QueuedGenerateSettings,
    ReplicaSpec,
)
from inferd.store.db import Database
from inferd.store.replicas import ReplicaStore
from inferd.tracing import Tracer


def queue_engines(settings: BrokerSettings, role: str,
                  stack: AsyncExitStack) -> Callable[[str, ReplicaSpec], Engine] | None:
    """How the catalogue builds ``queue`` replicas' engines: on a gateway or ``serve`` with a
    broker, over one RPC client (closed by ``stack``); None elsewhere."""
    if not (settings.broker_url and role in ("gateway", "serve")):
        return None
    # The broker's client (aio_pika) is imported by the processes that have a broker only.
    from inferd.engines.queue import QueueEngine, RpcClient

    client = RpcClient(settings.broker_url, settings.broker_prefix)
    stack.push_async_callback(client.close)

    def queue_engine(name: str, spec: ReplicaSpec) -> Engine:
        return QueueEngine(name, client, spec.upstream_model, spec.timeout)

    return queue_engine


async def start_role(settings: ClusterSettings, broker: BrokerSettings, jobs: JobSettings,
                     queued_generate: QueuedGenerateSettings, db: Database,
                     catalog: ReplicaCatalog, stack: AsyncExitStack, engines: dict[str, Engine],
                     tracer: Tracer | None = None) -> None:
    """Start what ``settings.role`` adds; everything started is closed by ``stack``;
    ``tracer``: what traces the requests a worker answers for gateways (None: nothing)."""
    if settings.role == "engine" and settings.gateway_url:
        from inferd.routing.enlist import GatewayRegistration  # aiohttp's client

        enlisted = GatewayRegistration(settings)
        enlisted.start(list(engines))
        stack.push_async_callback(enlisted.close)
    elif settings.role == "engine":
        registration = EngineRegistration(ReplicaStore(db), settings,
                                          announce=catalog.announce)
        await registration.register(list(engines))
        stack.push_async_callback(registration.close)
    if settings.role == "worker" and broker.broker_url and engines:
        from inferd.engines.queue import RpcServer

        concurrency = jobs.concurrency
        server = RpcServer(broker.broker_url, broker.broker_prefix, engines,
                           prefetch=max(1, concurrency), tracer=tracer)
        await server.start()
        stack.push_async_callback(server.close)
        # one replica per worker: a worker that stops takes only its own row along
        url = f"queue://{broker.broker_prefix}/{secrets.token_hex(6)}"
        registration = EngineRegistration(ReplicaStore(db), settings, kind="queue",
                                          url=url, announce=catalog.announce)
        await registration.register(list(engines))
        stack.push_async_callback(registration.close)
        await ensure_standby(ReplicaStore(db), broker.broker_prefix, list(engines),
                             settings.scale_from_zero_seconds)
    if settings.role == "worker" and queued_generate.queued_generate_queue:
        await start_task_server(queued_generate, broker, stack, engines,
                                prefetch=max(1, jobs.concurrency))


async def start_task_server(settings: QueuedGenerateSettings, broker: BrokerSettings,
                            stack: AsyncExitStack, engines: dict[str, Engine], *,
                            prefetch: int) -> None:
    """Consume the queued generate system's task queue (``queued_generate_worker``), taking
    up to ``prefetch`` tasks at once."""
    if not (broker.broker_url and broker.redis_url and engines):
        raise ValueError("INFERD_QUEUED_GENERATE_QUEUE needs a broker (INFERD_BROKER_URL or "
                         "RABBIT_MQ_HOST), Redis (INFERD_REDIS_URL or REDIS_HOST) and a model "
                         "hosted by this worker")
    # aio_pika and the Redis client, imported by the workers that answer these tasks only
    from inferd.engines.queued_generate import Keys
    from inferd.engines.queued_generate_worker import TaskServer

    server = TaskServer(broker.broker_url, broker.redis_url,
                        settings.queued_generate_queue,
                        Keys(settings.queued_generate_status_prefix,
                             settings.queued_generate_answer_prefix),
                        engines, settings.queued_generate_model, prefetch=prefetch)
    await server.start()
    stack.push_async_callback(server.close)
