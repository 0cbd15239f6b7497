"""Replica URLs stay inside the allow-list after creation: ``options.health_url`` is checked,
redirects are not followed, a name rebound to a refused address is refused when connecting,
and a token in a replica URL is masked wherever the URL is shown or logged.

Upstreams are real aiohttp servers on loopback; names resolve through ``fake_dns``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from inferd.engines.remote import RemoteEngine
from inferd.errors import InvalidRequest, UpstreamError
from inferd.outbound import HostAllowList
from inferd.routing.catalog import ReplicaCatalog, build_remote_engine
from inferd.routing.manage import ModelAdmin, ModelCreate, ReplicaUpdate
from inferd.routing.router import Router
from inferd.schemas.openai import ChatCompletionRequest
from inferd.settings import ReplicaSpec
from inferd.store.db import Database
from inferd.store.monitor import TableBrowser
from inferd.store.replicas import ReplicaStore
from tests.helpers import free_port, serving

LOOPBACK = HostAllowList(["127.0.0.1/32"])
CHAT = ChatCompletionRequest.model_validate(
    {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})


@pytest.fixture
async def admin(tmp_path: Path) -> AsyncIterator[ModelAdmin]:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'guard.db'}")
    await db.migrate()
    catalog = ReplicaCatalog(Router(), ReplicaStore(db), LOOPBACK, interval=3600,
                             cooldown_base=1.0, cooldown_max=60.0)
    yield ModelAdmin(catalog.store, catalog)
    await catalog.close()
    await db.close()


class Recorder:
    """A server that records every request it gets (method, path, Authorization header)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str]] = []
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self.handle)

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.seen.append((request.method, request.path, request.headers.get("Authorization", "")))
        return web.json_response({"object": "list", "data": []})


async def _fails(engine: RemoteEngine, call: str) -> str:
    """Run one kind of call on ``engine``; the message of the 502 it must raise."""
    with pytest.raises(UpstreamError) as info:
        if call == "chat":
            await engine.chat(CHAT)
        elif call == "stream":
            async for _chunk in engine.chat_stream(CHAT):
                pass
        else:
            await engine.probe()
    assert info.value.status == 502
    return info.value.message


async def test_health_url_outside_the_allow_list_is_refused(admin: ModelAdmin) -> None:
    await admin.create_model(ModelCreate(name="m"))
    bad = {"health_url": "http://169.254.169.254/latest/meta-data"}
    with pytest.raises(InvalidRequest) as info:
        await admin.create_replica("m", ReplicaSpec(url="http://127.0.0.1:9/v1", options=bad))
    assert info.value.status == 400 and info.value.param == "options.health_url"
    with pytest.raises(InvalidRequest):
        await admin.create_model(ModelCreate(name="n", replicas=[
            ReplicaSpec(url="http://127.0.0.1:9/v1", options={"health_url": "http://10.0.0.1/"})]))
    view = await admin.create_replica("m", ReplicaSpec(url="http://127.0.0.1:9/v1"))
    with pytest.raises(InvalidRequest):
        await admin.update_replica(view["id"], ReplicaUpdate(options=bad))
    # a row written past the API (an older version, the config file) is not used either
    model = await admin.store.find_model("m")
    assert model is not None
    stored = await admin.store.create_replica(
        model.id, ReplicaSpec(url="http://127.0.0.1:9/v1", options=bad))
    await admin.catalog.sync()
    assert admin.router.replica(view["id"]) is not None
    assert admin.router.replica(str(stored.id)) is None


async def test_redirects_of_a_replica_are_not_followed() -> None:
    target = Recorder()

    async with serving(target.app) as elsewhere:
        async def redirect(request: web.Request) -> web.Response:
            await request.read()
            raise web.HTTPTemporaryRedirect(elsewhere + request.path)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", redirect)
        async with serving(app) as upstream:
            engine = build_remote_engine(
                "m", ReplicaSpec(url=upstream + "/v1", api_key="sk-upstream",
                                 options={"health_url": upstream + "/health"}), LOOPBACK)
            await engine.start()
            try:
                for call in ("chat", "stream", "probe"):
                    message = await _fails(engine, call)
                    assert "redirect" in message or "307" in message, message
            finally:
                await engine.close()
    assert target.seen == []


async def test_a_replica_name_rebound_to_a_refused_address_is_refused_when_connecting(
        fake_dns: dict[str, list[str]]) -> None:
    internal = Recorder()  # what the name points at after the rebinding, outside the list
    port = free_port()
    runner = web.AppRunner(internal.app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.2", port).start()
    try:
        fake_dns["replica.test"] = ["127.0.0.1"]
        spec = ReplicaSpec(url=f"http://replica.test:{port}/v1", api_key="sk-upstream")
        await LOOPBACK.check(spec.url)  # allowed when created
        engine = build_remote_engine("m", spec, LOOPBACK)
        await engine.start()
        fake_dns["replica.test"] = ["127.0.0.2"]
        try:
            for call in ("chat", "stream", "probe"):
                message = await _fails(engine, call)
                assert "replica_allowed_hosts" in message, message
        finally:
            await engine.close()
    finally:
        await runner.cleanup()
    assert internal.seen == []


async def test_a_token_in_a_replica_url_is_never_shown_nor_logged(
        admin: ModelAdmin, caplog: pytest.LogCaptureFixture) -> None:
    token, health_token = "url-token-3f9a7c", "health-token-51bd2e"
    url = f"http://127.0.0.1:9/v1?token={token}"
    options = {"health_url": f"http://127.0.0.1:9/health?key={health_token}"}
    caplog.set_level(logging.DEBUG, logger="inferd")
    await admin.create_model(ModelCreate(name="m"))
    view = await admin.create_replica("m", ReplicaSpec(url=url, options=options))
    assert view["url"] == "http://127.0.0.1:9/v1?token=***"
    assert view["options"]["health_url"] == "http://127.0.0.1:9/health?key=***"
    shown: list[Any] = [view, await admin.replicas(), await admin.models(),
                        await admin.replica(view["id"]),
                        await TableBrowser(admin.store.db).rows("replicas"), caplog.text]
    # a view sent back as it was shown keeps the real URLs
    await admin.update_replica(view["id"], ReplicaUpdate(url=view["url"],
                                                         options=view["options"], weight=2.0))
    _, records = await admin.store.catalogue()  # what builds the engine: the real URLs
    assert [(r.url, r.options, r.weight) for r in records] == [(url, options, 2.0)]
    shown.append(caplog.text)
    for text in map(repr, shown):
        assert token not in text and health_token not in text
