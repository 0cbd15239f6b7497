"""Model and replica management (what the admin API and the proxy toolkit's routes call):
validation, the store and this gateway's router changed together, no credential in a view.

Stores are real (SQLite, PostgreSQL, MariaDB); the local engine is the echo engine.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa
from pydantic import ValidationError

from inferd.engines.echo import EchoEngine
from inferd.errors import Conflict, InferdError, InvalidRequest, NotFound
from inferd.outbound import HostAllowList
from inferd.routing.catalog import ReplicaCatalog
from inferd.routing.manage import ModelAdmin, ModelCreate, ModelUpdate, ReplicaUpdate
from inferd.routing.replica import Replica
from inferd.routing.router import Router
from inferd.settings import ModelSpec, ReplicaSpec
from inferd.store.db import Database
from inferd.store.replicas import ReplicaStore
from inferd.store.tables_replicas import replica_security_rules, replicas

SECRET = "sk-upstream-secret-value"


@pytest.fixture
async def admin(database: Database) -> AsyncIterator[ModelAdmin]:
    router = Router()
    router.add(Replica(id="local:echo", model="echo",
                       engine=EchoEngine(ModelSpec(name="echo", kind="echo"))))
    store = ReplicaStore(database)
    await store.create_model("echo", [], [], source="local")
    catalog = ReplicaCatalog(router, store, HostAllowList(["127.0.0.0/8"]), interval=3600,
                             cooldown_base=1.0, cooldown_max=60.0)
    yield ModelAdmin(store, catalog)
    await catalog.close()


def _create(name: str, *, aliases: list[str] | None = None, fallbacks: list[str] | None = None,
            replicas: list[ReplicaSpec] | None = None) -> ModelCreate:
    return ModelCreate(name=name, aliases=aliases or [], fallbacks=fallbacks or [],
                       replicas=replicas or [])


async def test_a_created_model_is_stored_and_routed_without_showing_its_key(
        admin: ModelAdmin) -> None:
    view = await admin.create_model(_create("llama", aliases=["l3"], replicas=[
        ReplicaSpec(url="http://127.0.0.1:9/v1", api_key=SECRET)]))
    assert view["name"] == "llama" and view["aliases"] == ["l3"]
    assert [r["has_api_key"] for r in view["replicas"]] == [True]
    assert SECRET not in repr(view) and SECRET not in repr(await admin.models())
    assert admin.router.resolve("l3") == "llama"
    found = await admin.find_model("l3")
    assert found.name == "llama"
    assert (await admin.find_model(str(found.id))).name == "llama"
    replica_id = view["replicas"][0]["id"]
    assert admin.router.replica(replica_id) is not None


async def test_names_are_checked(admin: ModelAdmin) -> None:
    await admin.create_model(_create("a", aliases=["x"]))
    with pytest.raises(Conflict):
        await admin.create_model(_create("a"))
    with pytest.raises(Conflict):
        await admin.create_model(_create("b", aliases=["x"]))  # an alias of "a"
    with pytest.raises(Conflict):
        await admin.create_model(_create("b", aliases=["a"]))  # the name of "a"
    with pytest.raises(InvalidRequest) as info:
        await admin.create_model(_create("b", fallbacks=["b"]))
    assert info.value.param == "fallbacks"
    with pytest.raises(InvalidRequest):  # outside the allow-list: nothing is created
        await admin.create_model(_create("c", replicas=[ReplicaSpec(url="http://10.9.9.9")]))
    assert {m["name"] for m in await admin.models()} == {"echo", "a"}


async def test_unknown_and_out_of_range_references_are_404(admin: ModelAdmin) -> None:
    for ref in ("nope", "999999", str(2**63), "9" * 40):
        with pytest.raises(NotFound):
            await admin.find_model(ref)
        with pytest.raises(NotFound):
            await admin.replica(ref)
        with pytest.raises(NotFound):
            await admin.delete_replica(ref)
        with pytest.raises(NotFound):
            await admin.update_replica(ref, ReplicaUpdate(weight=2.0))


async def test_replica_updates_are_validated_and_applied(admin: ModelAdmin) -> None:
    await admin.create_model(_create("m"))
    created = await admin.create_replica("m", ReplicaSpec(url="http://127.0.0.1:9"))
    replica_id = created["id"]
    with pytest.raises(InvalidRequest) as info:
        await admin.update_replica(replica_id, ReplicaUpdate.model_validate({"weight": None}))
    assert info.value.param == "weight"
    with pytest.raises(InvalidRequest):
        await admin.update_replica(replica_id, ReplicaUpdate(url="http://10.9.9.9"))
    updated = await admin.update_replica(replica_id, ReplicaUpdate(weight=3.0, api_key=SECRET))
    assert updated["weight"] == 3.0 and updated["has_api_key"] and SECRET not in repr(updated)
    live = admin.router.replica(replica_id)
    assert live is not None and live.weight == 3.0
    off = await admin.update_replica(replica_id, ReplicaUpdate(enabled=False))
    assert off["not_loaded"] == "disabled" and admin.router.replica(replica_id) is None
    assert (await admin.delete_replica(replica_id))["deleted"] is True
    assert await admin.replicas((await admin.find_model("m")).id) == []


async def test_local_models_show_their_engine_and_cannot_be_deleted(admin: ModelAdmin) -> None:
    assert (await admin.replica("local:echo"))["source"] == "local"
    assert [r["id"] for r in await admin.replicas()][:1] == ["local:echo"]
    with pytest.raises(Conflict):
        await admin.delete_model("echo")
    await admin.create_model(_create("gone"))
    assert (await admin.delete_model("gone"))["deleted"] is True
    with pytest.raises(NotFound):
        await admin.find_model("gone")


async def test_a_model_can_be_deactivated_and_renamed_by_alias(admin: ModelAdmin) -> None:
    await admin.create_model(_create("m", replicas=[ReplicaSpec(url="http://127.0.0.1:9")]))
    view = await admin.update_model("m", ModelUpdate(aliases=["mm"], active=False))
    assert view["aliases"] == ["mm"] and view["active"] is False
    assert admin.router.replicas() == [r for r in admin.router.replicas() if r.kind == "local"]
    assert [m["name"] for m in await admin.models(active=False)] == ["m"]


async def test_a_url_on_another_host_needs_its_credential_again(admin: ModelAdmin) -> None:
    await admin.create_model(_create("m"))
    created = await admin.create_replica("m", ReplicaSpec(url="http://127.0.0.1:9/v1",
                                                          api_key=SECRET))
    replica_id = created["id"]
    for url in ("http://127.0.0.2:9/v1", "http://127.0.0.1:10/v1", "https://127.0.0.1:9/v1"):
        with pytest.raises(InvalidRequest) as info:
            await admin.update_replica(replica_id, ReplicaUpdate(url=url))
        assert (info.value.param, info.value.code) == ("api_key", "api_key_required")
        assert "127.0.0.1:9" in info.value.message and SECRET not in info.value.message
    kept = await admin.replica(replica_id)
    assert kept["url"] == "http://127.0.0.1:9/v1" and kept["has_api_key"]
    # The same host (another path, its default port spelled out): the credential stays.
    same = await admin.update_replica(replica_id, ReplicaUpdate(url="http://127.0.0.1:9/v2"))
    assert same["has_api_key"] and same["url"] == "http://127.0.0.1:9/v2"
    # A new host with its credential, or with none.
    moved = await admin.update_replica(replica_id, ReplicaUpdate(url="http://127.0.0.2:9/v1",
                                                                 api_key="sk-other"))
    assert moved["has_api_key"] and moved["url"] == "http://127.0.0.2:9/v1"
    stored = {r.id: r for r in (await admin.store.catalogue())[1]}
    assert stored[int(replica_id)].api_key == "sk-other"
    bare = await admin.update_replica(replica_id, ReplicaUpdate(url="http://127.0.0.3:9/v1",
                                                                api_key=""))
    assert not bare["has_api_key"]
    # Without a credential, a replica moves freely.
    free = await admin.update_replica(replica_id, ReplicaUpdate(url="http://127.0.0.4:9/v1"))
    assert free["url"] == "http://127.0.0.4:9/v1" and not free["has_api_key"]


async def test_a_queued_generate_replica_is_checked_stored_and_routed(
        admin: ModelAdmin) -> None:
    options = {"queue": "llm-api-queue", "redis_url": "redis://127.0.0.1:6379/0"}
    with pytest.raises(InvalidRequest) as refused:  # Redis outside the allow-list
        await admin.create_model(_create("legacy", replicas=[ReplicaSpec(
            kind="queued_generate", url="amqp://127.0.0.1:5672/",
            options={**options, "redis_url": "redis://10.9.9.9:6379/0"})]))
    assert refused.value.param == "options.redis_url"
    view = await admin.create_model(_create("legacy", replicas=[ReplicaSpec(
        kind="queued_generate", url="amqp://127.0.0.1:5672/", api_key="admin:" + SECRET,
        options=options)]))
    [replica] = view["replicas"]
    assert replica["kind"] == "queued_generate" and replica["has_api_key"]
    assert SECRET not in repr(view)
    live = admin.router.replica(replica["id"])
    assert live is not None and live.engine.kind == "queued_generate"
    with pytest.raises(InvalidRequest) as refused:  # the broker too
        await admin.update_replica(replica["id"], ReplicaUpdate(url="amqp://10.9.9.9:5672/",
                                                                api_key="admin:admin"))
    assert refused.value.param == "url"


@pytest.fixture
async def upstream() -> AsyncIterator[str]:
    """A small OpenAI-compatible server: /health, and /v1/models behind a Bearer token."""
    from aiohttp import web

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def models(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {SECRET}":
            return web.json_response({"error": {"message": "bad key"}}, status=401)
        # a tenant header, when sent, is listed back as a model (what the upstream received)
        tenant = ([{"id": f"tenant-{request.headers['X-Tenant']}", "object": "model"}]
                  if "X-Tenant" in request.headers else [])
        return web.json_response({"object": "list", "data": [
            {"id": "qwen", "object": "model"}, {"id": "llama", "object": "model"}, *tenant]})

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/v1/models", models)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}/v1"
    await runner.cleanup()


async def test_a_replica_is_tested_before_it_is_saved(admin: ModelAdmin, upstream: str) -> None:
    test = await admin.test_replica(ReplicaSpec(url=upstream, api_key=SECRET,
                                                upstream_model="qwen"))
    assert test["ok"] and test["error"] is None and test["warning"] is None
    assert test["models"] == ["qwen", "llama"]
    other = await admin.test_replica(ReplicaSpec(url=upstream, api_key=SECRET,
                                                 upstream_model="mistral"))
    assert other["ok"] and "mistral" in other["warning"]
    refused = await admin.test_replica(ReplicaSpec(url=upstream, api_key="sk-wrong"))
    assert not refused["ok"] and "401" in refused["error"] and refused["models"] == []
    dead = await admin.test_replica(ReplicaSpec(url="http://127.0.0.1:9/v1"))
    assert not dead["ok"] and dead["error"]
    with pytest.raises(InvalidRequest):  # outside the allow-list: never reached
        await admin.test_replica(ReplicaSpec(url="http://10.9.9.9/v1"))
    with pytest.raises(InvalidRequest) as info:
        await admin.test_replica(ReplicaSpec(kind="queue", url="queue://x"))
    assert info.value.param == "kind"
    assert [m["name"] for m in await admin.models()] == ["echo"]  # nothing was stored


async def test_a_replica_is_checking_until_its_first_probe(admin: ModelAdmin,
                                                           upstream: str) -> None:
    view = await admin.create_model(_create("fresh", replicas=[
        ReplicaSpec(url=upstream), ReplicaSpec(url="http://127.0.0.1:9/v1")]))
    assert [r["checking"] for r in view["replicas"]] == [True, True]
    await admin.catalog.probe_all()
    after = (await admin.model_view(await admin.find_model("fresh")))["replicas"]
    assert [(r["checking"], r["healthy"]) for r in after] == [(False, True), (False, False)]
    local = await admin.replica("local:echo")
    assert local["checking"] is False


async def test_a_models_routing_is_stored_shown_and_applied(admin: ModelAdmin) -> None:
    view = await admin.create_model(ModelCreate(name="llama", routing="weighted"))
    assert (view["routing"], view["routing_default"]) == ("weighted", False)
    assert admin.router.routing_of("llama") == "weighted"
    view = await admin.update_model("llama", ModelUpdate(routing="least_busy"))
    assert view["routing"] == "least_busy" and admin.router.routing_of("llama") == "least_busy"
    view = await admin.update_model("llama", ModelUpdate(aliases=["l"]))  # left out: kept
    assert view["routing"] == "least_busy"
    view = await admin.update_model("llama", ModelUpdate(routing="default"))
    assert (view["routing"], view["routing_default"]) == ("prefix", True)
    assert admin.router.routing_of("llama") == "prefix"
    assert (await admin.find_model("llama")).routing is None
    with pytest.raises(ValueError, match="routing"):
        ModelUpdate.model_validate({"routing": "random"})


async def test_a_replicas_headers_are_sent_kept_encrypted_and_shown_masked(
        admin: ModelAdmin, upstream: str, database: Database) -> None:
    headers = {"Authorization": f"Bearer {SECRET}", "X-Tenant": "blue"}
    spec = ReplicaSpec(url=upstream, options={"headers": headers, "health_url": ""})
    tested = await admin.test_replica(spec)
    assert tested["ok"] and tested["models"] == ["qwen", "llama", "tenant-blue"]
    view = await admin.create_model(_create("tenanted", replicas=[spec]))
    [replica] = view["replicas"]
    assert replica["options"]["headers"] == {"Authorization": "***", "X-Tenant": "***"}
    assert SECRET not in repr(view) and SECRET not in repr(await admin.models())
    async with database.engine.connect() as conn:  # the row holds them masked
        stored = (await conn.execute(sa.select(replicas.c.options))).scalars().all()
        rules = (await conn.execute(sa.select(replica_security_rules.c.secret))).scalars().all()
    assert SECRET not in repr(stored) and "blue" not in repr(stored)
    # ... and the values are a security rule (encrypted as the credentials are)
    assert [database.secrets.open(str(r)) for r in rules] == [
        '{"Authorization": "Bearer sk-upstream-secret-value", "X-Tenant": "blue"}']
    live = admin.router.replica(replica["id"])
    assert live is not None and "tenant-blue" in await live.engine.upstream_models()
    # the masked values a view showed, sent back, keep the stored ones; a new value replaces
    await admin.update_replica(replica["id"], ReplicaUpdate(options={"headers": {
        "Authorization": "***", "X-Tenant": "green"}}))
    live = admin.router.replica(replica["id"])
    assert live is not None and "tenant-green" in await live.engine.upstream_models()
    with pytest.raises(InvalidRequest) as refused:  # a mask for a header never stored
        await admin.update_replica(replica["id"], ReplicaUpdate(options={"headers": {
            "X-Other": "***"}}))
    assert refused.value.param == "options.headers.X-Other"
    with pytest.raises(InvalidRequest) as refused:  # stored values never go to a new host
        await admin.update_replica(replica["id"], ReplicaUpdate(url="http://127.0.0.2:9/v1"))
    assert refused.value.code == "headers_required"
    # options without headers remove them: the upstream refuses the missing credential
    await admin.update_replica(replica["id"], ReplicaUpdate(options={}))
    live = admin.router.replica(replica["id"])
    assert live is not None
    with pytest.raises(InferdError) as unauthorized:
        await live.engine.upstream_models()
    assert "answered 401" in str(unauthorized.value)


@pytest.mark.parametrize("headers", [
    {"Host": "elsewhere"}, {"Content-Length": "1"}, {"X-Inferd-Forwarded": "1"},
    {"Bad Name": "x"}, {"X-Tenant": "a\r\nInjected: yes"}, {"X-Tenant": 3},
    {f"X-H{i}": "v" for i in range(33)}, ["X-Tenant"]])
def test_replica_headers_that_would_break_the_request_are_refused(headers: object) -> None:
    with pytest.raises(ValidationError):
        ReplicaSpec(url="http://127.0.0.1:9/v1", options={"headers": headers})
    with pytest.raises(ValidationError):
        ReplicaUpdate(options={"headers": headers})
