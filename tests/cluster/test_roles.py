"""Gateway and workers as separate processes on PostgreSQL and RabbitMQ."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Callable

import aio_pika
import httpx
import pytest
from openai import APIStatusError, BadRequestError, OpenAI

from tests.cluster.conftest import AMQP, migrate, submit, wait_finished
from tests.helpers import InferdProcess, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]


def test_a_cluster_role_refuses_an_unmigrated_schema(
        start: Callable[..., InferdProcess], cluster_env: dict[str, str]) -> None:
    with pytest.raises(RuntimeError, match="run `inferd migrate`"):
        start("gateway")
    assert migrate(cluster_env).returncode == 0
    start("gateway")  # now it starts


def test_gateway_publishes_and_workers_run_every_job_once(
        start: Callable[..., InferdProcess], cluster_env: dict[str, str]) -> None:
    assert migrate(cluster_env).returncode == 0
    start("worker", "--model", "echo")
    start("worker", "--model", "echo")
    gateway = start("gateway")
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        jobs = [submit(http, "echo", f"job number {i}") for i in range(40)]
        done = wait_finished(http, [j["id"] for j in jobs])
        for i, job in enumerate(jobs):
            finished = done[job["id"]]
            assert finished["status"] == "completed", finished
            assert finished["attempts"] == 1
            message = finished["result"]["choices"][0]["message"]["content"]
            assert message == f"job number {i}"


def test_a_worker_only_consumes_the_models_it_hosts(
        start: Callable[..., InferdProcess], cluster_env: dict[str, str]) -> None:
    assert migrate(cluster_env).returncode == 0
    start("worker", "--model", "slow").stop()  # "slow" is now known to the cluster
    start("worker", "--model", "echo")
    gateway = start("gateway")
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        slow = submit(http, "slow", "one two")
        fast = submit(http, "echo", "quick")
        assert wait_finished(http, [fast["id"]])[fast["id"]]["status"] == "completed"
        # the echo worker took the later job and left the earlier one in its model's queue
        assert http.get(f"/v1/jobs/{slow['id']}").json()["status"] == "pending"
        start("worker", "--model", "slow")
        assert wait_finished(http, [slow["id"]])[slow["id"]]["status"] == "completed"


def test_kill_9_a_worker_mid_job_and_another_finishes_it(
        start: Callable[..., InferdProcess], cluster_env: dict[str, str]) -> None:
    assert migrate(cluster_env).returncode == 0
    first = start("worker", "--model", "slow")
    gateway = start("gateway")
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        job = submit(http, "slow", "one two three four five six seven eight")
        end = time.monotonic() + 60
        while http.get(f"/v1/jobs/{job['id']}").json()["status"] != "running":
            assert time.monotonic() < end, "the job never started"
            time.sleep(0.05)
        first.kill()  # mid-job: the job is running, its message unacknowledged
        start("worker", "--model", "slow")
        finished = wait_finished(http, [job["id"]])[job["id"]]
    assert finished["status"] == "completed", finished
    assert finished["attempts"] == 2  # the killed run, then the one that finished
    assert finished["result"]["choices"][0]["message"]["content"] == \
        "one two three four five six seven eight"


def test_an_engine_registers_itself_and_leaves_routing_when_it_dies(
        start: Callable[..., InferdProcess], cluster_env: dict[str, str]) -> None:
    assert migrate(cluster_env).returncode == 0
    engine = start("engine", "--no-bundled", INFERD_ENGINE_HEARTBEAT_SECONDS="0.5")
    start("worker")  # no --model: runs jobs of every model on its replicas
    gateway = start("gateway")
    messages = [{"role": "user", "content": "through the engine"}]
    with OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0) as client, \
            httpx.Client(base_url=gateway.url, timeout=30) as http:
        reply = client.chat.completions.create(model="echo", messages=messages)
        assert reply.choices[0].message.content == "through the engine"
        stream = client.chat.completions.create(model="echo", messages=messages, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == \
            "through the engine"
        job = submit(http, "echo", "a job for the engine")
        done = wait_finished(http, [job["id"]])[job["id"]]
        assert done["result"]["choices"][0]["message"]["content"] == "a job for the engine"
        replicas = http.get("/admin/v1/replicas").json()["data"]
        mine = [r for r in replicas if r["model"] == "echo"]
        assert mine and mine[0]["url"] == engine.url + "/v1"
        engine.kill()
        end = time.monotonic() + 30
        while True:  # the heartbeat stops; the gateway drops the replica
            try:
                client.chat.completions.create(model="echo", messages=messages)
            except APIStatusError as exc:
                error = exc.response.json()["error"]
                if exc.status_code == 503:
                    assert error["type"] == "service_unavailable"
                    break
                # still listed until its heartbeat is stale: a clear 502, never a 500
                assert (exc.status_code, error["type"]) == (502, "upstream_error"), error
            assert time.monotonic() < end, "the dead engine stayed in routing"
            time.sleep(0.2)


def test_sync_requests_and_streams_reach_a_model_only_workers_host(
        start: Callable[..., InferdProcess], cluster_env: dict[str, str]) -> None:
    assert migrate(cluster_env).returncode == 0
    start("worker", "--model", "echo")
    start("worker", "--model", "echo")
    gateway = start("gateway")
    messages = [{"role": "user", "content": "over the broker and back"}]
    with OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0) as client:
        reply = client.chat.completions.create(model="echo", messages=messages)
        assert reply.choices[0].message.content == "over the broker and back"
        assert reply.usage is not None and reply.usage.completion_tokens == 5
        stream = client.chat.completions.create(model="echo", messages=messages, stream=True,
                                                stream_options={"include_usage": True})
        chunks = list(stream)
        words = [c.choices[0].delta.content for c in chunks if c.choices
                 and c.choices[0].delta.content]
        assert len(words) >= 5  # token by token, not one block
        assert "".join(words) == "over the broker and back"
        assert chunks[-1].usage is not None
        text = client.completions.create(model="echo", prompt="plain text prompt")
        assert text.choices[0].text == "plain text prompt"
        with pytest.raises(BadRequestError) as bad:  # bad input: a 400, never a 500
            client.chat.completions.create(model="echo", messages=messages,
                                           extra_body={"n": 0})
        assert bad.value.status_code == 400


def test_a_request_waits_for_a_worker_when_the_model_scaled_to_zero(
        start: Callable[..., InferdProcess], cluster_env: dict[str, str]) -> None:
    assert migrate(cluster_env).returncode == 0
    start("worker", "--model", "echo").stop()  # scaled in: no worker of "echo" runs
    gateway = start("gateway")
    body = {"model": "echo", "messages": [{"role": "user", "content": "held until a worker"}]}
    with httpx.Client(base_url=gateway.url, timeout=120) as http:
        # the model's only replica is its standby, and it is the one that will answer
        models = http.get("/admin/v1/models").json()["data"]
        echo = next(m for m in models if m["name"] == "echo")
        assert [r["source"] for r in echo["replicas"]] == ["standby"], echo
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            held = pool.submit(http.post, "/v1/chat/completions", json=body)
            # the request waits in the model's request queue: no answer while no worker runs
            wait_for(lambda: _rpc_messages(cluster_env, "echo") == 1, within=60,
                     what="the request to wait in the queue")
            assert not held.done()
            start("worker", "--model", "echo")  # a worker starts (the autoscaler's job)
            response = held.result(timeout=120)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "held until a worker"


def _rpc_messages(env: dict[str, str], model: str) -> int:
    async def count() -> int:
        connection = await aio_pika.connect(AMQP)
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(
                f"{env['INFERD_BROKER_PREFIX']}.rpc.{model}", durable=True, passive=True)
            return int(queue.declaration_result.message_count or 0)

    return asyncio.run(count())
