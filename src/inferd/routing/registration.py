"""Engines in routing: each ``inferd engine`` instance is an ``http`` replica of each model it
hosts, kept alive by a heartbeat.

Gateways pick a replica up on their next catalogue sync; when its heartbeat stops (the engine
was killed or lost its gateway) they drop it after ``3 x engine_heartbeat_seconds``. A clean
stop removes the replica at once. No replica needs to be entered by hand.

``EngineReplicas`` is the one logic of it, on the store: register an instance's replicas
(reusing the ones it registered before), beat for them, remove them. Two callers:

- ``GatewayEnrolment``: the gateway's ``/internal/v1/engines/{instance}`` routes, called by
  engines with their own key (``INFERD_ENGINE_API_KEY``) over HTTP (``inferd.routing.enlist``
  is the engine's side). The engine needs no database and no other secret.
- ``EngineRegistration``: a process on the shared database registering itself directly (an
  engine without ``INFERD_GATEWAY_URL``, and ``inferd worker --model`` for its ``queue``
  replicas).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Literal, TypedDict

from pydantic import BaseModel, Field

from inferd.errors import Conflict, InvalidRequest, NotFound
from inferd.redact import redact_url
from inferd.routing.catalog import ReplicaCatalog
from inferd.settings import ClusterSettings, ReplicaSpec
from inferd.store.heartbeats import HeartbeatStore
from inferd.store.replicas import ReplicaRecord, ReplicaStore

log = logging.getLogger("inferd.engine")
# The replica option naming the engine instance that registered it.
INSTANCE = "engine_instance"
# A replica is stale after this many missed beats.
MISSED_BEATS = 3
MAX_INSTANCE_CHARS = 200
# An engine's replicas silent this long (killed, never stopped cleanly: a pod lost with its
# node) are deleted when another engine registers, so rows of engines that never come back do
# not pile up. An engine that comes back later registers again (its heartbeat gets a 404).
FORGET_AFTER = 3600.0


class EngineReplicas:
    """The replicas engines registered (source ``engine``), by engine instance."""

    def __init__(self, store: ReplicaStore) -> None:
        self.store = store
        self.beats = HeartbeatStore(store.db)

    async def register(self, instance: str, url: str, models: list[str], *, kind: str,
                       api_key: str, every: float) -> list[ReplicaRecord]:
        """One replica per model at ``url``, with a fresh beat; the ones this instance
        registered before are reused (a restart keeps its rows)."""
        registered = []
        for name in models:
            record = await self.store.find_model(name)
            if record is None:
                with contextlib.suppress(Conflict):
                    await self.store.create_model(name, [], [], source="local")
                record = await self.store.find_model(name)
                assert record is not None
            mine = [r for r in await self.store.list_replicas(record.id)
                    if r.source == "engine" and _is_mine(r, instance, url)]
            if mine:
                replica = await self.store.update_replica(mine[0].id, {
                    "kind": kind, "api_key": api_key, "url": url,
                    "options": {**mine[0].options, INSTANCE: instance}})
                assert replica is not None
            else:
                spec = ReplicaSpec.model_validate({"kind": kind, "url": url,
                                                   "upstream_model": name, "api_key": api_key,
                                                   "options": {INSTANCE: instance}})
                replica = await self.store.create_replica(record.id, spec, source="engine")
            await self.beats.beat(replica.id, MISSED_BEATS * every)
            registered.append(replica)
        return registered

    async def of(self, instance: str) -> list[ReplicaRecord]:
        """The replicas ``instance`` registered."""
        return [r for r in await self.store.list_replicas()
                if r.source == "engine" and r.options.get(INSTANCE) == instance]

    async def beat(self, ids: list[int], every: float) -> None:
        for replica_id in ids:
            await self.beats.beat(replica_id, MISSED_BEATS * every)

    async def forget_silent(self, now: float | None = None) -> list[int]:
        """Delete the engines' replicas with no heartbeat for ``FORGET_AFTER`` seconds."""
        now = time.time() if now is None else now
        beats = await self.beats.last_beats()
        silent = [r.id for r in await self.store.list_replicas() if r.source == "engine"
                  and now - max(beats.get(r.id, 0.0), r.updated_at) > FORGET_AFTER]
        await self.remove(silent)
        return silent

    async def remove(self, ids: list[int]) -> None:
        """Delete the replicas and their heartbeats."""
        for replica_id in ids:
            await self.beats.forget(replica_id)
            await self.store.delete_replica(replica_id)


def _is_mine(record: ReplicaRecord, instance: str, url: str) -> bool:
    """A replica ``instance`` registered before; a row from before instance names existed is
    known by its URL."""
    if INSTANCE in record.options:
        return bool(record.options[INSTANCE] == instance)
    return record.url == redact_url(url)


# -- the gateway's side: /internal/v1/engines/{instance} ---------------------------------------
class EngineRegister(BaseModel):
    """Body of ``PUT /internal/v1/engines/{instance}``: where the engine answers and what."""

    url: str = Field(min_length=1, max_length=2048)
    models: list[str] = Field(min_length=1, max_length=100)
    kind: Literal["http", "triton"] = "http"
    # How often the engine beats: its replicas are dropped after three missed beats.
    heartbeat_seconds: float | None = Field(default=None, gt=0.0, le=3600.0)


class EngineHeartbeat(BaseModel):
    """Body of ``POST /internal/v1/engines/{instance}/heartbeat`` (may be empty)."""

    heartbeat_seconds: float | None = Field(default=None, gt=0.0, le=3600.0)


def check_instance(instance: str) -> str:
    if not 1 <= len(instance) <= MAX_INSTANCE_CHARS or not instance.isprintable():
        raise InvalidRequest(f"An engine instance is 1 to {MAX_INSTANCE_CHARS} printable "
                             "characters.", param="instance", code="invalid_engine_instance")
    return instance


class EngineReplica(TypedDict):
    id: str
    model: str


class Registered(TypedDict):
    """The answer to an engine's registration: its replicas, and how often to beat."""

    object: Literal["engine"]
    instance: str
    heartbeat_seconds: float
    replicas: list[EngineReplica]


class Beaten(TypedDict):
    object: Literal["engine"]
    instance: str
    heartbeat_seconds: float
    replicas: int


class Deregistered(TypedDict):
    object: Literal["engine"]
    instance: str
    deleted: Literal[True]
    replicas: int


class GatewayEnrolment:
    """What a gateway does for the engines that register with it over HTTP.

    The replicas' credential is this gateway's ``engine_api_key`` (what the engine accepts),
    whoever calls: an admin key that registers an engine is never stored.
    """

    def __init__(self, store: ReplicaStore, catalog: ReplicaCatalog,
                 settings: ClusterSettings) -> None:
        self.replicas = EngineReplicas(store)
        self.catalog = catalog
        self.api_key = settings.engine_api_key
        self.every = settings.engine_heartbeat_seconds

    async def register(self, instance: str, body: EngineRegister) -> Registered:
        check_instance(instance)
        for i, name in enumerate(body.models):
            if not 1 <= len(name) <= 191:
                raise InvalidRequest("A model name is 1 to 191 characters.",
                                     param=f"models[{i}]")
        await self.catalog.check(body.url)
        every = body.heartbeat_seconds or self.every
        models = list(dict.fromkeys(body.models))
        records = await self.replicas.register(instance, body.url, models, kind=body.kind,
                                               api_key=self.api_key, every=every)
        # replicas of models this instance no longer hosts leave routing
        kept = {r.id for r in records}
        await self.replicas.remove([r.id for r in await self.replicas.of(instance)
                                    if r.id not in kept])
        for replica_id in await self.replicas.forget_silent():
            log.info("replica %s forgotten: its engine has been silent for %.0f s", replica_id,
                     FORGET_AFTER)
        await self.catalog.changed()
        log.info("engine %s registered at %s: %s", instance, redact_url(body.url),
                 ", ".join(models))
        return {"object": "engine", "instance": instance, "heartbeat_seconds": every,
                "replicas": [{"id": str(r.id), "model": r.model} for r in records]}

    async def heartbeat(self, instance: str, body: EngineHeartbeat) -> Beaten:
        """404 when the instance has no replica here (never registered, removed by an admin,
        or a new database): the engine registers again."""
        ids = await self._ids(instance)
        every = body.heartbeat_seconds or self.every
        await self.replicas.beat(ids, every)
        return {"object": "engine", "instance": instance, "heartbeat_seconds": every,
                "replicas": len(ids)}

    async def deregister(self, instance: str) -> Deregistered:
        ids = await self._ids(instance)
        await self.replicas.remove(ids)
        await self.catalog.changed()
        log.info("engine %s left routing", instance)
        return {"object": "engine", "instance": instance, "deleted": True, "replicas": len(ids)}

    async def _ids(self, instance: str) -> list[int]:
        check_instance(instance)
        ids = [r.id for r in await self.replicas.of(instance)]
        if not ids:
            raise NotFound(f"No engine instance '{instance}' is registered.",
                           code="engine_not_found")
        return ids


# -- a process on the shared database ----------------------------------------------------------
class EngineRegistration:
    """The replicas this process registered in the shared database, and the task that keeps
    them alive."""

    def __init__(self, store: ReplicaStore, settings: ClusterSettings, *, kind: str = "http",
                 url: str | None = None,
                 announce: Callable[[str], Awaitable[None]] | None = None) -> None:
        self.replicas = EngineReplicas(store)
        self.store = store
        self.announce = announce
        self.kind = kind
        self.url = url or settings.engine_url
        self.api_key = settings.engine_api_key if kind == "http" else ""
        self.every = settings.engine_heartbeat_seconds
        # Its replicas are known by this instance's name, not by their URL: engines behind
        # one service name (``docker compose --scale engine=2``) are replicas of their own,
        # and one stopping leaves the others' rows alone.
        self.instance = settings.engine_instance or socket.gethostname()
        self.replica_ids: list[int] = []
        self._task: asyncio.Task[None] | None = None

    async def register(self, models: list[str]) -> None:
        """One replica per model at ``engine_url`` (the one this instance registered before is
        reused)."""
        records = await self.replicas.register(self.instance, self.url, models, kind=self.kind,
                                               api_key=self.api_key, every=self.every)
        for replica in records:
            self.replica_ids.append(replica.id)
            log.info("registered as replica %s of %s at %s", replica.id, replica.model,
                     redact_url(self.url))
        self._task = asyncio.create_task(self._beat_forever(), name="engine:heartbeat")
        if self.announce is not None:
            await self.announce("")

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            for replica_id in self.replica_ids:
                try:
                    await self.replicas.beat([replica_id], self.every)
                except Exception:  # the database is away: the next beat tries again
                    log.warning("heartbeat of replica %s failed", replica_id, exc_info=True)

    async def close(self) -> None:
        """Leave routing at once: delete the replicas and their heartbeats."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for replica_id in self.replica_ids:
            with contextlib.suppress(Exception):
                await self.replicas.remove([replica_id])
        if self.announce is not None and self.replica_ids:
            await self.announce("")
