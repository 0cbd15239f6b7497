"""``inferd engine``: register this process as an ``http`` replica of each model it hosts, and
keep it in routing with a heartbeat.

Gateways pick the replica up on their next catalogue sync; when the heartbeat stops (the engine
was killed or lost the database) they drop it after ``3 x engine_heartbeat_seconds``. A clean
stop removes the replica at once. No replica needs to be entered by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable

from inferd.errors import Conflict
from inferd.redact import redact_url
from inferd.settings import ReplicaSpec, Settings
from inferd.store.heartbeats import HeartbeatStore
from inferd.store.replicas import ReplicaStore

log = logging.getLogger("inferd.engine")
# The replica option naming the engine instance that registered it.
INSTANCE = "engine_instance"


class EngineRegistration:
    """The replicas this engine registered, and the task that keeps them alive."""

    def __init__(self, store: ReplicaStore, settings: Settings, *, kind: str = "http",
                 url: str | None = None,
                 announce: Callable[[], Awaitable[None]] | None = None) -> None:
        self.store = store
        self.announce = announce
        self.beats = HeartbeatStore(store.db)
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
        for name in models:
            record = await self.store.find_model(name)
            if record is None:
                with contextlib.suppress(Conflict):
                    await self.store.create_model(name, [], [], source="local")
                record = await self.store.find_model(name)
                assert record is not None
            mine = [r for r in await self.store.list_replicas(record.id)
                    if r.source == "engine" and self._is_mine(r.url, r.options)]
            spec = ReplicaSpec.model_validate({"kind": self.kind, "url": self.url,
                                               "upstream_model": name,
                                               "api_key": self.api_key,
                                               "options": {INSTANCE: self.instance}})
            if mine:
                replica = mine[0]
                await self.store.update_replica(replica.id, {
                    "api_key": self.api_key, "url": self.url,
                    "options": {**replica.options, INSTANCE: self.instance}})
            else:
                replica = await self.store.create_replica(record.id, spec, source="engine")
            self.replica_ids.append(replica.id)
            await self.beats.beat(replica.id, 3 * self.every)
            log.info("registered as replica %s of %s at %s", replica.id, name,
                     redact_url(self.url))
        self._task = asyncio.create_task(self._beat_forever(), name="engine:heartbeat")
        if self.announce is not None:
            await self.announce()

    def _is_mine(self, url: str, options: dict[str, object]) -> bool:
        """A replica this instance registered before (a restart reuses it); a row from before
        instance names existed is known by its URL."""
        if INSTANCE in options:
            return options[INSTANCE] == self.instance
        return url == redact_url(self.url)

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            for replica_id in self.replica_ids:
                try:
                    await self.beats.beat(replica_id, 3 * self.every)
                except Exception:  # the database is away: the next beat tries again
                    log.warning("heartbeat of replica %s failed", replica_id, exc_info=True)

    async def close(self) -> None:
        """Leave routing at once: delete the replicas and their heartbeats."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for replica_id in self.replica_ids:
            with contextlib.suppress(Exception):
                await self.beats.forget(replica_id)
                await self.store.delete_replica(replica_id)
        if self.announce is not None and self.replica_ids:
            await self.announce()
