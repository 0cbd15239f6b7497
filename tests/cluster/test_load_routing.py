"""Load-aware routing with real processes: two gateways read the load an ``inferd engine``
publishes on its ``/metrics`` (format detected) and show it in their replica views."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.cluster.conftest import ENGINE_KEY, migrate
from tests.helpers import InferdProcess, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]

ADMIN = "sk-admin-for-the-load-routing-tests"


def engine_replica(gateway: httpx.Client) -> dict[str, Any] | None:
    """The gateway's view of the engine's replica of ``echo``, once it has read its load."""
    found = gateway.get("/admin/v1/replicas").json()["data"]
    return next(
        (
            r
            for r in found
            if r["model"] == "echo" and r["kind"] == "http" and r.get("load_read_at") is not None
        ),
        None,
    )


def test_gateways_read_the_load_an_inferd_engine_publishes(
    start: Callable[..., InferdProcess], cluster_env: dict[str, str]
) -> None:
    assert migrate(cluster_env).returncode == 0
    env = {
        "INFERD_ADMIN_KEY": ADMIN,
        "INFERD_ENGINE_API_KEY": ENGINE_KEY,
        "INFERD_LOAD_POLL_INTERVAL": "0.2",
    }
    gateways = [start("gateway", **env), start("gateway", **env)]
    start("engine", "--no-bundled", **env, INFERD_ENGINE_INSTANCE="engine-a")
    admin = {"Authorization": f"Bearer {ADMIN}"}
    clients = [httpx.Client(base_url=p.url, headers=admin, timeout=30) for p in gateways]
    try:
        for gateway in clients:
            # read, and routable: the engine registers a moment before its server listens, and
            # a health probe in that moment takes it out of rotation for a short cooldown
            wait_for(
                lambda g=gateway: (r := engine_replica(g)) is not None  # type: ignore[misc]
                and r["available"],
                what="the gateway read the engine's load and routes to it",
            )
            replica = engine_replica(gateway)
            assert replica is not None
            # no request sent yet: nothing running or waiting; an echo engine has no KV cache
            assert (replica["running"], replica["waiting"], replica["kv_cache_usage"]) == (
                0,
                0,
                None,
            )
        for gateway in clients:  # and requests are routed with the read load
            answer = gateway.post(
                "/v1/chat/completions",
                json={"model": "echo", "messages": [{"role": "user", "content": "hi"}]},
            )
            assert answer.status_code == 200, answer.text
    finally:
        for gateway in clients:
            gateway.close()
