"""Usage adds up exactly once across a cluster: a gateway (or a worker running a job) that
forwards a request to an ``inferd engine`` records it, and the engine, called with its engine
credential, does not record it again; a gateway killed with records not yet written writes
them when it starts again."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from openai import AsyncOpenAI

from tests.cluster.conftest import ENGINE_KEY, migrate, submit, wait_finished
from tests.helpers import InferdProcess, spooled_usage, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]

ADMIN = "sk-admin-for-the-metering-test"


async def sync_requests(url: str, key: str, count: int) -> int:
    """``count`` plain and ``count`` streamed chats: the tokens their answers reported."""
    tokens = 0
    async with AsyncOpenAI(base_url=url + "/v1", api_key=key, max_retries=0) as client:
        for i in range(count):
            messages = [{"role": "user", "content": " ".join(["word"] * (i + 1))}]
            reply = await client.chat.completions.create(model="echo", messages=messages)
            assert reply.usage is not None
            tokens += reply.usage.total_tokens
            stream = await client.chat.completions.create(
                model="echo", messages=messages, stream=True,
                stream_options={"include_usage": True})
            async for chunk in stream:
                if chunk.usage is not None:
                    tokens += chunk.usage.total_tokens
    return tokens


def test_usage_through_an_engine_is_recorded_once(
        start: Callable[..., InferdProcess], cluster_env: dict[str, str]) -> None:
    assert migrate(cluster_env).returncode == 0
    env = {"INFERD_ADMIN_KEY": ADMIN, "INFERD_USAGE_FLUSH_SECONDS": "0.2"}
    engine = start("engine", "--no-bundled", **env, INFERD_ENGINE_API_KEY=ENGINE_KEY)
    worker = start("worker", **env)  # runs the jobs on the engine's replica
    gateway = start("gateway", **env)
    admin = {"Authorization": f"Bearer {ADMIN}"}
    with httpx.Client(base_url=gateway.url, headers=admin, timeout=30) as http:
        user: dict[str, Any] = http.post("/admin/v1/keys", json={"name": "metered"}).json()
        tokens = asyncio.run(sync_requests(gateway.url, user["key"], count=4))
        with httpx.Client(base_url=gateway.url, timeout=30,
                          headers={"Authorization": f"Bearer {user['key']}"}) as mine:
            ids = [submit(mine, "echo", f"job {i} of the metering test")["id"]
                   for i in range(3)]
            done = wait_finished(mine, ids)
        assert {j["status"] for j in done.values()} == {"completed"}
        tokens += sum(j["usage"]["total_tokens"] for j in done.values())
        # A clean stop writes what each process still buffers: every record is in now.
        worker.stop()
        engine.stop()
        rows = http.get("/admin/v1/usage", params={"group_by": "key"}).json()["data"]
    by_key = {str(r["key_id"]): r for r in rows}
    assert set(by_key) == {str(user["id"])}, rows  # nothing under the engine credential
    mine_row = by_key[str(user["id"])]
    assert mine_row["requests"] == 4 * 2 + 3
    assert mine_row["total_tokens"] == tokens
    assert mine_row["errors"] == 0


def test_a_gateway_killed_with_records_pending_writes_them_at_its_restart(
        start: Callable[..., InferdProcess], cluster_env: dict[str, str]) -> None:
    assert migrate(cluster_env).returncode == 0
    # the writer would wait an hour: every record is pending (spooled) at the kill
    env = {"INFERD_ADMIN_KEY": ADMIN, "INFERD_USAGE_FLUSH_SECONDS": "3600"}
    start("engine", "--no-bundled", **env, INFERD_ENGINE_API_KEY=ENGINE_KEY)
    gateway = start("gateway", **env)
    admin = {"Authorization": f"Bearer {ADMIN}"}
    with httpx.Client(base_url=gateway.url, headers=admin, timeout=30) as http:
        user: dict[str, Any] = http.post("/admin/v1/keys", json={"name": "killed"}).json()
    tokens = asyncio.run(sync_requests(gateway.url, user["key"], count=10))
    wait_for(lambda: spooled_usage(gateway.data_dir) == 20, what="the 20 records spooled")
    gateway.kill()
    again = InferdProcess(gateway.data_dir, command="gateway", env={**cluster_env, **env})
    with again, httpx.Client(base_url=again.url, headers=admin, timeout=30) as http:
        # the usage API answers once the killed process's spool is replayed
        rows = http.get("/admin/v1/usage", params={"group_by": "key"}).json()["data"]
        metrics = http.get("/metrics").text
    assert [(str(r["key_id"]), r["requests"], r["total_tokens"]) for r in rows] == [
        (str(user["id"]), 20, tokens)]
    assert "inferd_usage_records_replayed 20.0" in metrics
