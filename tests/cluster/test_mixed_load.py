"""Two gateways, two workers and one engine on PostgreSQL, RabbitMQ and Redis: a mixed load of
sync, streamed, async and batch requests all succeed, a key's limit is exact across the
gateways, and usage adds up exactly."""

from __future__ import annotations

import asyncio
import io
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from openai import AsyncOpenAI, OpenAI, RateLimitError

from tests.cluster.conftest import ENGINE_KEY, migrate, submit, wait_finished
from tests.helpers import InferdProcess, require_service

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq, pytest.mark.redis]

ADMIN = "sk-admin-for-the-mixed-load-test"
REDIS_URL = "redis://127.0.0.1:6379/0"


def redis_now() -> float:
    """Redis's clock, the one the gateways' shared limiter refills the buckets with."""
    import redis

    with redis.Redis.from_url(REDIS_URL) as client:
        seconds, micros = client.time()
    return float(seconds) + micros / 1_000_000


async def mixed(urls: list[str], key: str, rounds: int) -> tuple[int, int, list[str]]:
    """Sync and streamed chats over both gateways, and job submissions:
    (requests made, tokens the answers reported, job ids)."""
    clients = [AsyncOpenAI(base_url=u + "/v1", api_key=key, max_retries=0) for u in urls]
    https = [httpx.AsyncClient(base_url=u, headers={"Authorization": f"Bearer {key}"},
                               timeout=30) for u in urls]
    tokens, jobs = 0, []

    async def one(i: int) -> None:
        nonlocal tokens
        client, http = clients[i % 2], https[i % 2]
        words = " ".join(f"w{j}" for j in range(1 + i % 5))
        messages = [{"role": "user", "content": words}]
        reply = await client.chat.completions.create(model="echo", messages=messages)
        assert reply.choices[0].message.content == words
        assert reply.usage is not None
        tokens += reply.usage.total_tokens
        stream = await client.chat.completions.create(
            model="echo", messages=messages, stream=True, stream_options={"include_usage": True})
        text = ""
        async for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
            if chunk.usage is not None:
                tokens += chunk.usage.total_tokens
        assert text == words
        response = await http.post("/v1/jobs", json={
            "endpoint": "/v1/chat/completions", "body": {"model": "echo",
                                                         "messages": messages}})
        assert response.status_code == 202, response.text
        jobs.append(response.json()["id"])

    try:
        await asyncio.gather(*(one(i) for i in range(rounds)))
    finally:
        for c in clients:
            await c.close()
        for h in https:
            await h.aclose()
    return 3 * rounds, tokens, jobs


async def limited(urls: list[str], key: str, attempts: int) -> tuple[int, int]:
    clients = [AsyncOpenAI(base_url=u + "/v1", api_key=key, max_retries=0) for u in urls]
    ok = refused = 0

    async def one(i: int) -> None:
        nonlocal ok, refused
        try:
            await clients[i % 2].chat.completions.create(
                model="echo", messages=[{"role": "user", "content": "x"}])
            ok += 1
        except RateLimitError:
            refused += 1

    await asyncio.gather(*(one(i) for i in range(attempts)))
    for c in clients:
        await c.close()
    return ok, refused


def run_batch(url: str, key: str, lines: int) -> int:
    """A batch of chat requests through a gateway, run by the workers: its total tokens."""
    client = OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)
    text = "\n".join(json.dumps({"custom_id": f"c{i}", "method": "POST",
                                 "url": "/v1/chat/completions", "body": {
                                     "model": "echo", "messages": [
                                         {"role": "user", "content": f"batch line {i}"}]}})
                     for i in range(lines))
    uploaded = client.files.create(file=("in.jsonl", io.BytesIO(text.encode())),
                                   purpose="batch")
    batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                  completion_window="24h")
    end = time.monotonic() + 120
    while batch.status not in ("completed", "failed", "cancelled", "expired"):
        assert time.monotonic() < end, "the batch did not finish"
        time.sleep(0.2)
        batch = client.batches.retrieve(batch.id)
    assert batch.status == "completed" and batch.request_counts is not None
    assert batch.request_counts.completed == lines and batch.output_file_id
    content = client.files.content(batch.output_file_id).text
    output = [json.loads(x) for x in content.splitlines()]
    client.close()
    assert sorted(o["custom_id"] for o in output) == sorted(f"c{i}" for i in range(lines))
    return sum(int(o["response"]["body"]["usage"]["total_tokens"]) for o in output)


def test_two_gateways_two_workers_one_engine_under_mixed_load(
        start: Callable[..., InferdProcess], cluster_env: dict[str, str]) -> None:
    require_service("redis")
    assert migrate(cluster_env).returncode == 0
    env = {"INFERD_ADMIN_KEY": ADMIN, "INFERD_REDIS_URL": REDIS_URL,
           "INFERD_REDIS_PREFIX": f"test-{uuid.uuid4().hex[:10]}",
           "INFERD_JOB_CONCURRENCY": "4",
           # job ids submitted together (a batch's, concurrent jobs') share broker messages;
           # the other cluster tests keep a message per job
           "INFERD_BROKER_GROUP": "8"}
    start("engine", "--no-bundled", **env, INFERD_ENGINE_API_KEY=ENGINE_KEY)
    start("worker", **env)
    start("worker", **env)
    gateways = [start("gateway", **env), start("gateway", **env)]
    urls = [g.url for g in gateways]
    admin = {"Authorization": f"Bearer {ADMIN}"}
    with httpx.Client(base_url=urls[0], headers=admin, timeout=30) as http:
        submit(http, "echo", "warm up")
        user: dict[str, Any] = http.post("/admin/v1/keys", json={"name": "mixed"}).json()
        capped: dict[str, Any] = http.post("/admin/v1/keys", json={"name": "capped",
                                                                   "rpm": 25}).json()
        requests, tokens, job_ids = asyncio.run(mixed(urls, user["key"], rounds=30))
        done = wait_finished(http, job_ids)
        assert {j["status"] for j in done.values()} == {"completed"}
        tokens += sum(j["usage"]["total_tokens"] for j in done.values())
        tokens += run_batch(urls[1], user["key"], lines=6)
        requests += 6
        began = redis_now()
        ok, refused = asyncio.run(limited(urls, capped["key"], attempts=40))
        # exact across the two gateways (Redis): 25, and one more for each 2.4 s the attempts
        # spanned (the bucket refills 25 a minute; none on an idle machine)
        refilled = int((redis_now() - began) * 25 / 60)
        assert ok + refused == 40 and 25 <= ok <= 25 + refilled, (ok, refused, refilled)
        end = time.monotonic() + 30
        while True:  # usage is written in batches, about once a second per process
            rows = http.get("/admin/v1/usage", params={"group_by": "key",
                                                       "key_id": str(user["id"])}).json()
            counted = sum(r["requests"] for r in rows["data"])
            if counted >= requests or time.monotonic() > end:
                break
            time.sleep(0.2)
        assert counted == requests
        assert sum(r["errors"] for r in rows["data"]) == 0
        assert sum(r["total_tokens"] for r in rows["data"]) == tokens
