"""Scale from zero: a model hosted by workers keeps a standby replica while none runs.

``inferd worker --model NAME`` registers a ``queue`` replica of its own and removes it when it
stops, so with every worker scaled in (KEDA to zero) a model would have no replica and a
request would fail at once. Each worker therefore also makes sure the model has one standby
replica: a ``queue`` row of source ``standby`` (no heartbeat: it outlives the workers).
The router sends it a request only when no other replica of the model is available; the
request then waits in the model's request queue (``<prefix>.rpc.<model>``, which the
autoscaler counts) for up to ``scale_from_zero_seconds`` until a worker starts and answers.
"""

from __future__ import annotations

import logging

from inferd.errors import Conflict
from inferd.settings import ReplicaSpec
from inferd.store.replicas import ReplicaStore

log = logging.getLogger("inferd.routing.standby")

STANDBY = "standby"  # the source of a standby row


async def ensure_standby(store: ReplicaStore, prefix: str, models: list[str],
                         wait_seconds: float) -> None:
    """One standby ``queue`` replica per model (created by the first worker of a model;
    two workers starting together may both create one, which only makes two standbys)."""
    for name in models:
        record = await store.find_model(name)
        if record is None:
            continue
        replicas = await store.list_replicas(record.id)
        if any(r.source == STANDBY for r in replicas):
            continue
        spec = ReplicaSpec(kind="queue", url=f"queue://{prefix}/standby",
                           upstream_model=name, timeout=wait_seconds)
        try:
            await store.create_replica(record.id, spec, source=STANDBY)
        except Conflict:  # created meanwhile by another worker
            continue
        log.info("standby replica of %s: requests wait up to %g s for a worker", name,
                 wait_seconds)
