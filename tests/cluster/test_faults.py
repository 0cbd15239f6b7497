"""Faults the cluster survives, against the real services.

``test_broker_restart_*`` stops the shared RabbitMQ application for a few seconds
(``rabbitmqctl stop_app`` / ``start_app``, marked ``broker_restart``): other users of the same
broker see it restart too (``make test`` runs it alone: marked ``serial``). It is started again
in a ``finally``.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Callable

import httpx
import pytest

from tests.cluster.conftest import ENGINE_KEY, migrate, submit, wait_finished
from tests.helpers import InferdProcess

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=120)


async def submit_many(urls: list[str], count: int, restart_after: int) -> list[str]:
    """Submit ``count`` jobs over the gateways; stop the broker's app after ``restart_after``
    were accepted and start it again a few seconds later. Returns the ids that got a 202."""
    accepted: list[str] = []
    statuses: list[int] = []
    clients = [httpx.AsyncClient(base_url=u, timeout=60) for u in urls]
    todo = iter(range(count))
    restarted = asyncio.Event()

    async def one(http: httpx.AsyncClient) -> None:
        for i in todo:
            body = {"endpoint": "/v1/chat/completions", "body": {
                "model": "echo", "messages": [{"role": "user", "content": f"job {i}"}]}}
            response = await http.post("/v1/jobs", json=body)
            statuses.append(response.status_code)
            if response.status_code == 202:
                accepted.append(response.json()["id"])

    async def restart() -> None:
        while len(accepted) < restart_after:  # noqa: ASYNC110 (counts, not an event)
            await asyncio.sleep(0.01)
        await asyncio.to_thread(rabbitmqctl, "stop_app")
        try:
            await asyncio.sleep(3)  # submissions go on while the broker is away
        finally:
            await asyncio.to_thread(rabbitmqctl, "start_app")
            restarted.set()

    try:
        await asyncio.gather(restart(), *(one(clients[i % len(clients)]) for i in range(8)))
    finally:
        for http in clients:
            await http.aclose()
    assert restarted.is_set()
    # an outage is invisible to clients: every submission is accepted (the outbox keeps it)
    assert set(statuses) == {202}, {s: statuses.count(s) for s in set(statuses)}
    return accepted


# Four processes to start, a broker restart and 500 jobs to submit and run: on a busy machine
# that takes longer than the suite's 300 s hang guard, while every step has its own deadline
# (process start, rabbitmqctl, the wait for each next job to finish).
@pytest.mark.timeout(1200)
@pytest.mark.serial  # the broker stops for every test using it: make test runs this one alone
@pytest.mark.broker_restart
@pytest.mark.parametrize("group", ["1", "16"])  # a message per job; up to 16 ids a message
def test_broker_restart_while_submitting_500_jobs_completes_each_once(
        start: Callable[..., InferdProcess], cluster_env: dict[str, str], group: str) -> None:
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("rabbitmqctl is not installed: cannot restart the broker")
    assert migrate(cluster_env).returncode == 0
    start("worker", "--model", "echo", INFERD_BROKER_GROUP=group)
    start("worker", "--model", "echo", INFERD_BROKER_GROUP=group)
    gateways = [start("gateway", INFERD_BROKER_GROUP=group) for _ in range(2)]
    with httpx.Client(base_url=gateways[0].url, timeout=30) as http:
        submit(http, "echo", "warm up")  # the gateways know the model
        ids: list[str] = []
        try:
            ids = asyncio.run(submit_many([g.url for g in gateways], 500, restart_after=150))
        finally:
            rabbitmqctl("start_app")  # idempotent: the broker is back whatever happened
        assert len(ids) == 500 and len(set(ids)) == 500
        done = wait_finished(http, ids)
    bad = {i: j["status"] for i, j in done.items() if j["status"] != "completed"}
    assert not bad
    # exactly once: no job ran twice (its result was stored by its first and only run)
    runs: dict[int, int] = {}
    for job in done.values():
        runs[job["attempts"]] = runs.get(job["attempts"], 0) + 1
    assert set(runs) == {1}, runs
    for job in done.values():
        words = job["request"]["messages"][0]["content"]
        assert job["result"]["choices"][0]["message"]["content"] == words


ADMIN = "sk-admin-for-the-cluster-tests"


async def mixed_load(url: str, key: str, stop: asyncio.Event) -> list[int]:
    """Sync chats, job submissions and job reads with a user key until ``stop``."""
    statuses: list[int] = []
    headers = {"Authorization": f"Bearer {key}"}
    chat = {"model": "echo", "messages": [{"role": "user", "content": "still here"}]}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as http:

        async def loop(kind: int) -> None:
            while not stop.is_set():
                if kind == 0:
                    response = await http.post("/v1/chat/completions", json=chat)
                elif kind == 1:
                    response = await http.post("/v1/jobs", json={
                        "endpoint": "/v1/chat/completions", "body": chat})
                else:
                    response = await http.get("/v1/jobs", params={"limit": 5})
                statuses.append(response.status_code)
                if response.status_code >= 500:
                    error = response.json()["error"]  # the OpenAI error shape, not a trace
                    assert error["type"] == "service_unavailable", error
                await asyncio.sleep(0.01)

        await asyncio.gather(*(loop(i % 3) for i in range(6)))
    return statuses


async def terminate_backends(database: str) -> int:
    import asyncpg

    conn = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/test")
    try:
        rows = await conn.fetch("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                "WHERE datname = $1 AND pid <> pg_backend_pid()", database)
    finally:
        await conn.close()
    return len(rows)


def test_terminated_database_connections_give_503s_and_recover(
        start: Callable[..., InferdProcess], cluster_env: dict[str, str]) -> None:
    assert migrate(cluster_env).returncode == 0
    env = {"INFERD_ADMIN_KEY": ADMIN}
    start("engine", "--no-bundled", **env, INFERD_ENGINE_API_KEY=ENGINE_KEY)
    start("worker", "--model", "echo", **env)
    gateway = start("gateway", **env)
    with httpx.Client(base_url=gateway.url, timeout=30,
                      headers={"Authorization": f"Bearer {ADMIN}"}) as admin:
        created = admin.post("/admin/v1/keys", json={"name": "load"})
        assert created.status_code == 201, created.text
        key = created.json()["key"]
        submit(admin, "echo", "warm up")
    database = cluster_env["INFERD_DATABASE_URL"].rsplit("/", 1)[1]

    async def scenario() -> tuple[list[int], list[int]]:
        stop = asyncio.Event()
        load = asyncio.create_task(mixed_load(gateway.url, key, stop))
        await asyncio.sleep(1)
        killed = [await terminate_backends(database) for _ in range(5)]
        await asyncio.sleep(1)
        stop.set()
        return killed, await load

    killed, statuses = asyncio.run(scenario())
    assert killed[0] > 0  # inferd's connections were there and were terminated
    assert set(statuses) <= {200, 202, 503}, {s: statuses.count(s) for s in set(statuses)}
    assert statuses.count(200) > 0
    # recovered without a restart: the same key works for sync requests and jobs
    with httpx.Client(base_url=gateway.url, timeout=30,
                      headers={"Authorization": f"Bearer {key}"}) as http:
        job = submit(http, "echo", "after the outage")
        done = wait_finished(http, [job["id"]])[job["id"]]
        assert done["status"] == "completed", done
        reply = http.post("/v1/chat/completions", json={
            "model": "echo", "messages": [{"role": "user", "content": "ok"}]})
        assert reply.status_code == 200, reply.text
