"""Engines are replicas by instance, not by URL: two engines behind one service name
(``docker compose up --scale engine=2``) register two replicas, and one stopping leaves the
other in routing. On SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

from inferd.routing.registration import INSTANCE, EngineRegistration
from inferd.settings import ClusterSettings, Settings
from inferd.store.db import Database
from inferd.store.replicas import ReplicaStore

SHARED_URL = "http://engine:8000/v1"  # what both engines of a scaled compose service advertise


def _settings(instance: str) -> ClusterSettings:
    return ClusterSettings(engine_url=SHARED_URL, engine_instance=instance,
                           engine_api_key="k" * 8 + "engine-key-of-the-cluster",
                           engine_heartbeat_seconds=3600)


async def test_two_instances_at_one_url_are_two_replicas(database: Database) -> None:
    store = ReplicaStore(database)
    first = EngineRegistration(store, _settings("engine-1"))
    second = EngineRegistration(store, _settings("engine-2"))
    await first.register(["echo"])
    await second.register(["echo"])
    replicas = await store.list_replicas()
    assert len(replicas) == 2
    assert {r.options[INSTANCE] for r in replicas} == {"engine-1", "engine-2"}
    assert first.replica_ids != second.replica_ids

    await first.close()  # a clean stop of one instance
    left = await store.list_replicas()
    assert [r.id for r in left] == second.replica_ids
    await second.close()
    assert await store.list_replicas() == []


async def test_a_restarted_instance_reuses_its_replica(database: Database) -> None:
    store = ReplicaStore(database)
    before = EngineRegistration(store, _settings("engine-1"))
    await before.register(["echo"])
    assert before._task is not None
    before._task.cancel()  # killed: no clean stop, its row stays
    again = EngineRegistration(store, _settings("engine-1"))
    await again.register(["echo"])
    assert again.replica_ids == before.replica_ids
    assert len(await store.list_replicas()) == 1
    await again.close()


async def test_the_admin_key_is_never_the_replica_credential(database: Database) -> None:
    store = ReplicaStore(database)
    settings = Settings(engine_url=SHARED_URL, engine_instance="e",
                        admin_key="an-admin-key-of-thirty-two-chars-long")
    registration = EngineRegistration(store, settings.cluster)
    await registration.register(["echo"])
    _, full = await store.catalogue()
    assert [r.api_key for r in full] == [""]
    await registration.close()
