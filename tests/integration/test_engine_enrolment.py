"""What a gateway does for engines registering over HTTP (``/internal/v1/engines``): replicas
by instance with the gateway's engine key as their credential (never the caller's), heartbeats,
a clean stop, a stale engine out of routing. On SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa

from inferd.errors import InvalidRequest, NotFound
from inferd.outbound import HostAllowList
from inferd.routing.catalog import ReplicaCatalog
from inferd.routing.registration import (
    FORGET_AFTER,
    INSTANCE,
    EngineHeartbeat,
    EngineRegister,
    GatewayEnrolment,
)
from inferd.routing.router import Router
from inferd.settings import ClusterSettings
from inferd.store.db import Database
from inferd.store.heartbeats import PREFIX
from inferd.store.replicas import ReplicaStore
from inferd.store.repo import KeyValueStore
from inferd.store.tables import kv
from inferd.store.tables_replicas import replicas

ENGINE_KEY = "sk-engines-own-key-of-the-enrolment-tests"
URL = "http://127.0.0.1:9/v1"


@pytest.fixture
async def enrolment(database: Database) -> AsyncIterator[GatewayEnrolment]:
    store = ReplicaStore(database)
    catalog = ReplicaCatalog(Router(), store, HostAllowList(["127.0.0.0/8"]), interval=3600,
                             cooldown_base=1.0, cooldown_max=60.0)
    settings = ClusterSettings(engine_api_key=ENGINE_KEY, engine_heartbeat_seconds=5)
    yield GatewayEnrolment(store, catalog, settings)
    await catalog.close()


def _routed(enrolment: GatewayEnrolment) -> dict[str, set[str]]:
    """Model -> the ids of its replicas in this gateway's router."""
    routed: dict[str, set[str]] = {}
    for replica in enrolment.catalog.router.replicas():
        routed.setdefault(replica.model, set()).add(replica.id)
    return routed


async def test_an_engine_registers_one_replica_per_model_with_the_gateways_key(
        enrolment: GatewayEnrolment) -> None:
    answer = await enrolment.register("engine-1", EngineRegister(url=URL,
                                                                 models=["echo", "slow"]))
    assert answer["instance"] == "engine-1" and answer["heartbeat_seconds"] == 5
    assert [r["model"] for r in answer["replicas"]] == ["echo", "slow"]
    ids = {r["model"]: r["id"] for r in answer["replicas"]}
    assert _routed(enrolment) == {"echo": {ids["echo"]}, "slow": {ids["slow"]}}
    _, stored = await enrolment.replicas.store.catalogue()
    assert {(r.source, r.kind, r.url, r.api_key, r.options[INSTANCE]) for r in stored} == {
        ("engine", "http", URL, ENGINE_KEY, "engine-1")}

    # registering again (a restart) reuses the rows; a model it no longer hosts leaves
    again = await enrolment.register("engine-1", EngineRegister(url=URL, models=["echo"],
                                                                heartbeat_seconds=2))
    assert again["replicas"] == [{"id": ids["echo"], "model": "echo"}]
    assert _routed(enrolment) == {"echo": {ids["echo"]}}
    assert len(await enrolment.replicas.store.list_replicas()) == 1


async def test_two_instances_at_one_url_and_a_clean_stop_of_one(
        enrolment: GatewayEnrolment) -> None:
    first = await enrolment.register("engine-1", EngineRegister(url=URL, models=["echo"]))
    second = await enrolment.register("engine-2", EngineRegister(url=URL, models=["echo"]))
    assert first["replicas"][0]["id"] != second["replicas"][0]["id"]
    assert len(_routed(enrolment)["echo"]) == 2

    left = await enrolment.deregister("engine-1")
    assert left == {"object": "engine", "instance": "engine-1", "deleted": True, "replicas": 1}
    assert _routed(enrolment) == {"echo": {second["replicas"][0]["id"]}}
    remaining = await enrolment.replicas.store.list_replicas()
    assert [str(r.id) for r in remaining] == [second["replicas"][0]["id"]]
    facts = KeyValueStore(enrolment.replicas.store.db)
    assert await facts.get(f"{PREFIX}{first['replicas'][0]['id']}") is None
    with pytest.raises(NotFound):
        await enrolment.deregister("engine-1")


async def test_heartbeats_keep_an_engine_and_an_unknown_one_is_told_to_register(
        enrolment: GatewayEnrolment) -> None:
    with pytest.raises(NotFound) as unknown:
        await enrolment.heartbeat("engine-9", EngineHeartbeat())
    assert unknown.value.code == "engine_not_found"
    await enrolment.register("engine-1", EngineRegister(url=URL, models=["echo"],
                                                        heartbeat_seconds=0.2))
    store = enrolment.replicas.store
    # three missed beats of 0.2 s: the stored replica drops out of the catalogue
    stale = time.monotonic() + 60
    while [r for r in (await store.catalogue())[1] if r.source == "engine"]:
        assert time.monotonic() < stale, "a stale engine stayed in the catalogue"
        await asyncio.sleep(0.05)
    beat = await enrolment.heartbeat("engine-1", EngineHeartbeat(heartbeat_seconds=60))
    assert beat["replicas"] == 1 and beat["heartbeat_seconds"] == 60
    assert [r.model for r in (await store.catalogue())[1]] == ["echo"]


async def test_bad_registrations_are_refused(enrolment: GatewayEnrolment) -> None:
    with pytest.raises(InvalidRequest):  # outside the replica allow-list
        await enrolment.register("e", EngineRegister(url="http://192.0.2.1/v1",
                                                     models=["echo"]))
    with pytest.raises(InvalidRequest):
        await enrolment.register("x" * 201, EngineRegister(url=URL, models=["echo"]))
    with pytest.raises(InvalidRequest):
        await enrolment.register("e", EngineRegister(url=URL, models=["m" * 192]))
    assert await enrolment.replicas.store.list_replicas() == []



async def test_replicas_of_an_engine_silent_for_an_hour_are_forgotten(
        enrolment: GatewayEnrolment) -> None:
    """A killed engine that never comes back (a pod lost with its node, under a new name each
    time) leaves no rows forever: the next registration deletes them."""
    gone = await enrolment.register("engine-lost", EngineRegister(url=URL, models=["echo"]))
    gone_id = int(gone["replicas"][0]["id"])
    long_ago = time.time() - FORGET_AFTER - 60
    async with enrolment.replicas.store.db.engine.begin() as conn:
        await conn.execute(sa.update(kv).where(kv.c.key == f"{PREFIX}{gone_id}")
                           .values(updated_at=long_ago))
        await conn.execute(sa.update(replicas).where(replicas.c.id == gone_id)
                           .values(updated_at=long_ago))
    recent = await enrolment.register("engine-quiet", EngineRegister(url=URL, models=["echo"]))
    await enrolment.register("engine-new", EngineRegister(url=URL, models=["echo"]))
    left = {r.options[INSTANCE] for r in await enrolment.replicas.store.list_replicas()}
    assert left == {"engine-quiet", "engine-new"}
    assert await KeyValueStore(enrolment.replicas.store.db).get(f"{PREFIX}{gone_id}") is None
    with pytest.raises(NotFound):  # if it comes back, its heartbeat tells it to register again
        await enrolment.heartbeat("engine-lost", EngineHeartbeat())
    assert recent["replicas"]
