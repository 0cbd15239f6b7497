"""Engines register through a gateway with a key of their own (``INFERD_GATEWAY_URL``,
``INFERD_ENGINE_API_KEY``): an engine with no database URL and no admin key registers with a
gateway on PostgreSQL, is routed to, beats, leaves on a clean stop and drops out when killed.
The engines' key is accepted by the gateway on the registration routes only."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import httpx
import pytest
from openai import APIStatusError, OpenAI

from tests.cluster.conftest import ECHO, ENGINE_KEY, migrate
from tests.helpers import InferdProcess, free_port, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]

ADMIN_KEY = "sk-admin-key-of-the-engine-gateway-tests"
MESSAGES = [{"role": "user", "content": "through the engine"}]
# What an engine's pod holds: its own key and the gateway's address, nothing of the cluster.
CLUSTER_VARIABLES = ("INFERD_DATABASE_URL", "INFERD_BROKER_URL", "INFERD_REDIS_URL",
                     "INFERD_ADMIN_KEY", "INFERD_SECRET_KEY", "DATABASE_URL")


@pytest.fixture
def engines(tmp_path: Path) -> Iterator[Callable[..., InferdProcess]]:
    """Start ``inferd engine`` registering with ``gateway_url``, with no cluster setting."""
    procs: list[InferdProcess] = []

    def run(gateway_url: str, instance: str) -> InferdProcess:
        proc = InferdProcess(tmp_path / f"engine-{instance}", "--no-bundled", command="engine",
                             env={"INFERD_MODELS": ECHO, "INFERD_GATEWAY_URL": gateway_url,
                                  "INFERD_ENGINE_API_KEY": ENGINE_KEY,
                                  "INFERD_ENGINE_INSTANCE": instance,
                                  "INFERD_ENGINE_HEARTBEAT_SECONDS": "0.5"})
        for name in CLUSTER_VARIABLES:
            proc.env.pop(name, None)
        procs.append(proc)
        return proc.start()

    yield run
    for proc in procs:
        proc.stop()


def engine_replicas(http: httpx.Client, instance: str, routed: bool = True
                    ) -> list[dict[str, object]]:
    """The replicas ``instance`` registered, as the gateway's admin API lists them: those in
    its router (``routed``), or every stored row."""
    replicas = http.get("/admin/v1/replicas").json()["data"]
    return [r for r in replicas if r["source"] == "engine"
            and r["options"].get("engine_instance") == instance
            and (not routed or "not_loaded" not in r)]


def test_an_engine_with_no_database_registers_through_the_gateway_with_its_own_key(
        tmp_path: Path, cluster_env: dict[str, str],
        engines: Callable[..., InferdProcess]) -> None:
    assert migrate(cluster_env).returncode == 0
    gateway = InferdProcess(tmp_path / "gateway", command="gateway", port=free_port(),
                            env={**cluster_env, "INFERD_ADMIN_KEY": ADMIN_KEY,
                                 "INFERD_ENGINE_API_KEY": ENGINE_KEY})
    # the engine starts first: it serves, and registers once the gateway is up
    engine = engines(gateway.url, "engine-a")
    assert (engine.data_dir / "inferd.db").exists()  # a SQLite file of its own
    with gateway, httpx.Client(base_url=gateway.url, timeout=30,
                               headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as admin, \
            OpenAI(base_url=gateway.url + "/v1", api_key=ADMIN_KEY, max_retries=0) as client:
        mine = wait_for(lambda: found if len(found := engine_replicas(admin, "engine-a")) == 2
                        else None, what="the engine's replicas (echo, slow) at the gateway")
        assert "could not register" in engine.log()  # it tried while the gateway was down
        assert sorted((r["model"], r["url"], r["has_api_key"]) for r in mine) == [
            ("echo", engine.url + "/v1", True), ("slow", engine.url + "/v1", True)]

        reply = client.chat.completions.create(model="echo", messages=MESSAGES)
        assert reply.choices[0].message.content == "through the engine"
        stream = client.chat.completions.create(model="echo", messages=MESSAGES, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == \
            "through the engine"

        # the engines' key: the registration routes only
        as_engine = {"Authorization": f"Bearer {ENGINE_KEY}"}
        for method, path, body in (
                ("POST", "/v1/chat/completions", {"model": "echo", "messages": MESSAGES}),
                ("GET", "/v1/models", None), ("GET", "/admin/v1/keys", None),
                ("GET", "/admin/v1/replicas", None),
                ("POST", "/v1/jobs", {"endpoint": "/v1/chat/completions",
                                      "body": {"model": "echo", "messages": MESSAGES}})):
            refused = admin.request(method, path, json=body, headers=as_engine)
            assert refused.status_code == 403, (path, refused.text)
            assert refused.json()["error"]["code"] == "engine_key_not_allowed"
        beat = admin.post("/internal/v1/engines/engine-a/heartbeat", json={},
                          headers=as_engine)
        assert beat.status_code == 200 and beat.json()["replicas"] == 2, beat.text
        user = admin.post("/admin/v1/keys", json={"name": "a user"}).json()["key"]
        refused = admin.put("/internal/v1/engines/engine-x", headers={
            "Authorization": f"Bearer {user}"}, json={"url": engine.url + "/v1",
                                                      "models": ["echo"]})
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["code"] == "engine_scope_required"

        # the engine knows only its own key: not the admin key, not the gateway's users
        with httpx.Client(base_url=engine.url, timeout=30) as direct:
            for key in (ADMIN_KEY, user):
                answer = direct.get("/v1/models", headers={"Authorization": f"Bearer {key}"})
                assert answer.status_code == 401, answer.text
            assert direct.get("/v1/models", headers=as_engine).status_code == 200

        engine.stop()  # a clean stop: its replica leaves at once
        wait_for(lambda: not engine_replicas(admin, "engine-a", routed=False),
                 what="the stopped engine's replica removed")
        assert "left routing" in engine.log()


def test_a_killed_engine_drops_out_of_routing_after_missed_heartbeats(
        start: Callable[..., InferdProcess], cluster_env: dict[str, str],
        engines: Callable[..., InferdProcess]) -> None:
    assert migrate(cluster_env).returncode == 0
    gateway = start("gateway", INFERD_ADMIN_KEY=ADMIN_KEY, INFERD_ENGINE_API_KEY=ENGINE_KEY)
    first, second = engines(gateway.url, "engine-1"), engines(gateway.url, "engine-2")
    with httpx.Client(base_url=gateway.url, timeout=30,
                      headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as admin, \
            OpenAI(base_url=gateway.url + "/v1", api_key=ADMIN_KEY, max_retries=0) as client:
        for instance in ("engine-1", "engine-2"):
            wait_for(partial(engine_replicas, admin, instance), what=f"{instance}'s replica")
        first.kill()
        second.kill()

        def refused() -> bool:  # the beats stop; the gateway drops both replicas
            try:
                client.chat.completions.create(model="echo", messages=MESSAGES)
            except APIStatusError as exc:
                error = exc.response.json()["error"]
                if exc.status_code == 503:
                    assert error["type"] == "service_unavailable"
                    return True
                # still listed until its heartbeat is stale: a clear 502, never a 500
                assert (exc.status_code, error["type"]) == (502, "upstream_error"), error
            return False

        wait_for(refused, what="the killed engines out of routing")
        # killed, not stopped: their rows stay (a restart of the instance reuses its own)
        assert engine_replicas(admin, "engine-1", routed=False)
        assert engine_replicas(admin, "engine-2", routed=False)
