"""Models, replicas and their credentials in the store, on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import pytest

from inferd.errors import Conflict
from inferd.settings import RemoteModelSpec, ReplicaSpec
from inferd.store.db import Database
from inferd.store.replicas import ReplicaStore


async def test_models_and_replicas_round_trip(database: Database) -> None:
    store = ReplicaStore(database)
    model = await store.create_model("llama", ["l3"], ["small"])
    with pytest.raises(Conflict):
        await store.create_model("llama", [], [])
    replica = await store.create_replica(model.id, ReplicaSpec(
        kind="triton", url="http://10.0.0.5:8000", upstream_model="vllm_model",
        api_key="sk-upstream-secret", weight=2.0, options={"chat_template": "{{ x }}"}))
    assert replica.has_credential and replica.api_key == ""
    assert replica.model == "llama" and replica.weight == 2.0
    assert replica.options == {"chat_template": "{{ x }}"}
    listed = await store.list_replicas(model.id)
    assert [r.id for r in listed] == [replica.id]
    assert "sk-upstream-secret" not in repr(listed)
    _, full = await store.catalogue()
    assert full[0].api_key == "sk-upstream-secret"
    assert full[0].spec().api_key == "sk-upstream-secret"
    assert "sk-upstream-secret" not in repr(full[0].spec())

    updated = await store.update_replica(replica.id, {"weight": 5.0, "api_key": ""})
    assert updated is not None and updated.weight == 5.0 and not updated.has_credential
    assert await store.update_replica(99999, {"weight": 1.0}) is None
    moved = await store.update_model(model.id, aliases=["l"], active=False)
    assert moved is not None and moved.aliases == ["l"] and not moved.active

    assert await store.delete_model(model.id)
    assert await store.list_replicas() == []
    assert await store.get_replica(replica.id) is None
    assert not await store.delete_replica(replica.id)


async def test_config_models_are_applied_idempotently(database: Database) -> None:
    store = ReplicaStore(database)
    spec = RemoteModelSpec(name="m", aliases=["a"], replicas=[
        ReplicaSpec(url="http://127.0.0.1:1"), ReplicaSpec(url="http://127.0.0.1:2")])
    await store.apply_config([spec])
    model = await store.find_model("m")
    assert model is not None
    api = await store.create_replica(model.id, ReplicaSpec(url="http://127.0.0.1:3"))
    first = {r.url: r.id for r in await store.list_replicas()}
    spec.replicas = [ReplicaSpec(url="http://127.0.0.1:2", weight=4.0)]
    await store.apply_config([spec])
    after = {r.url: (r.id, r.weight, r.source) for r in await store.list_replicas()}
    assert after == {"http://127.0.0.1:2": (first["http://127.0.0.1:2"], 4.0, "config"),
                     "http://127.0.0.1:3": (api.id, 1.0, "api")}
