"""The replica catalogue: the router kept in step with the store, and health probes.

Stores are real (SQLite, PostgreSQL, MariaDB); upstreams are a real aiohttp server on loopback
that answers ``/health``, and a loopback port where nothing listens.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from inferd.engines.http import HttpEngine
from inferd.errors import ModelNotFound
from inferd.outbound import HostAllowList
from inferd.routing.catalog import ReplicaCatalog, build_remote_engine, start_catalog
from inferd.routing.router import Router
from inferd.settings import ReplicaSpec, load_settings
from inferd.store.db import Database
from inferd.store.replicas import ReplicaStore
from tests.helpers import free_port, serving

LOOPBACK = HostAllowList(["127.0.0.0/8"])


@pytest.fixture
async def upstream() -> AsyncIterator[str]:
    """A server that answers its health check."""

    async def health(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_get("/health", health)
    async with serving(app) as url:
        yield url


@pytest.fixture
async def catalog(database: Database) -> AsyncIterator[ReplicaCatalog]:
    catalog = ReplicaCatalog(Router(), ReplicaStore(database), LOOPBACK, interval=3600,
                             cooldown_base=1.0, cooldown_max=60.0)
    yield catalog
    await catalog.close()


async def test_sync_adds_rebuilds_and_retires_replicas(catalog: ReplicaCatalog,
                                                       upstream: str) -> None:
    store, router = catalog.store, catalog.router
    model = await store.create_model("llama", ["l3"], [])
    first = await store.create_replica(model.id, ReplicaSpec(url=upstream + "/v1", weight=2.0))
    await catalog.sync()
    live = router.replica(str(first.id))
    assert live is not None and live.weight == 2.0 and live.kind == "http"
    assert router.resolve("l3") == "llama"

    await store.update_replica(first.id, {"weight": 4.0})
    await catalog.sync()
    rebuilt = router.replica(str(first.id))
    assert rebuilt is not None and rebuilt is not live and rebuilt.weight == 4.0

    await store.update_replica(first.id, {"enabled": False})
    await catalog.sync()
    assert router.replica(str(first.id)) is None

    await store.delete_model(model.id)
    await catalog.sync()
    with pytest.raises(ModelNotFound):
        router.resolve("llama")


async def test_an_inactive_model_and_a_refused_url_get_no_replica(catalog: ReplicaCatalog,
                                                                  upstream: str) -> None:
    store, router = catalog.store, catalog.router
    model = await store.create_model("off", [], [])
    await store.create_replica(model.id, ReplicaSpec(url=upstream))
    await store.update_model(model.id, active=False)
    outside = await store.create_model("outside", [], [])
    # stored directly (the admin API would refuse it): a gateway with a narrower allow-list
    # than the one that wrote the row must not use it
    refused = await store.create_replica(outside.id, ReplicaSpec(url="http://10.1.2.3:8000"))
    await catalog.sync()
    assert router.replicas() == []
    assert router.replica(str(refused.id)) is None


async def test_probes_mark_replicas_healthy_or_not(catalog: ReplicaCatalog,
                                                   upstream: str) -> None:
    store, router = catalog.store, catalog.router
    model = await store.create_model("m", [], [])
    alive = await store.create_replica(model.id, ReplicaSpec(url=upstream))
    dead = await store.create_replica(model.id,
                                      ReplicaSpec(url=f"http://127.0.0.1:{free_port()}"))
    await catalog.sync()
    await catalog.probe_all()
    up, down = router.replica(str(alive.id)), router.replica(str(dead.id))
    assert up is not None and up.healthy and up.last_error is None
    assert down is not None and not down.healthy and down.last_error
    assert down.requests == 0  # a probe is not a request


async def test_start_catalog_records_local_models_and_the_config(tmp_path: Path,
                                                                 upstream: str) -> None:
    settings = load_settings(
        data_dir=tmp_path, bundled_models=False,
        models=[{"name": "echo", "kind": "echo", "aliases": ["e"], "routing": "weighted"}],
        remote_models=[{"name": "remote", "replicas": [{"url": upstream}],
                        "routing": "least_busy"}],
        replica_allowed_hosts=["127.0.0.0/8"], health_check_interval=3600)
    database = Database(settings.storage.resolved_database_url())
    await database.migrate()
    store, router = ReplicaStore(database), Router()
    catalog = await start_catalog(router, store, settings.router,
                                  models=settings.engines.all_models())
    try:
        local = await store.find_model("echo")
        assert local is not None and local.source == "local" and local.aliases == ["e"]
        assert local.routing == "weighted"
        assert [r.model for r in router.replicas()] == ["remote"]
        assert router.routing_of("remote") == "least_busy"
        # a routing set through the API: the config file's is put back at the next start
        remote = await store.find_model("remote")
        assert remote is not None and remote.routing == "least_busy"
        await store.update_model(remote.id, routing="prefix")
        again = await start_catalog(Router(), store, settings.router,  # a restart: no change
                                    models=settings.engines.all_models())
        await again.close()
        remote = await store.find_model("remote")
        assert remote is not None and remote.routing == "least_busy"
        assert [m.name for m in await store.list_models()] == ["echo", "remote"]
    finally:
        await catalog.close()
        await database.close()


def test_remote_engines_by_kind() -> None:
    http = build_remote_engine("m", ReplicaSpec(url="http://127.0.0.1:1"))
    triton = build_remote_engine("m", ReplicaSpec(kind="triton", url="http://127.0.0.1:1"))
    assert isinstance(http, HttpEngine)
    assert type(triton).__name__ == "TritonEngine"
