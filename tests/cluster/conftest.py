"""A cluster on the real services: a fresh PostgreSQL database and RabbitMQ queue prefix per
test, and ``inferd gateway`` / ``worker`` / ``migrate`` processes started from one set of
settings (as the compose file and the Kubernetes manifests start them)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest

from tests.conftest import _pg_exec
from tests.helpers import ROOT, InferdProcess, require_service

AMQP = "amqp://guest:guest@127.0.0.1:5672/"
# The key gateways send to an engine: its own, never the admin key.
ENGINE_KEY = "sk-engine-key-of-the-cluster-tests"
ECHO = json.dumps([{"name": "echo", "kind": "echo"},
                   {"name": "slow", "kind": "echo", "echo_delay": 0.5}])


async def _delete_queues(prefix: str) -> None:
    connection = await aio_pika.connect(AMQP)
    async with connection:
        channel = await connection.channel()
        for name in (f"{prefix}.jobs.echo", f"{prefix}.jobs.slow", f"{prefix}.dead"):
            await channel.queue_delete(name)
        await channel.exchange_delete(f"{prefix}.dead")


@pytest.fixture
def cluster_env() -> Iterator[dict[str, str]]:
    """Settings every role of one test cluster shares."""
    for service in ("postgresql", "rabbitmq"):
        require_service(service)
    name = f"inferd_{uuid.uuid4().hex[:12]}"
    asyncio.run(_pg_exec(f'CREATE DATABASE "{name}"'))
    prefix = f"test-{uuid.uuid4().hex[:10]}"
    yield {"INFERD_DATABASE_URL": f"postgresql://postgres@127.0.0.1:5432/{name}",
           "INFERD_BROKER_URL": AMQP, "INFERD_BROKER_PREFIX": prefix,
           "INFERD_MODELS": ECHO, "INFERD_JOB_LEASE_SECONDS": "2",
           "INFERD_JOB_SWEEP_SECONDS": "0.5", "INFERD_HEALTH_CHECK_INTERVAL": "0.5"}
    asyncio.run(_delete_queues(prefix))
    asyncio.run(_pg_exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def migrate(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "inferd", "migrate"], cwd=ROOT, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src"), **env},
                          capture_output=True, timeout=120)


@pytest.fixture
def start(tmp_path: Path, cluster_env: dict[str, str]
          ) -> Iterator[Callable[..., InferdProcess]]:
    """Start a role: ``start("worker", "--model", "echo")``; all are stopped afterwards."""
    procs: list[InferdProcess] = []

    def run(role: str, *args: str, **env: str) -> InferdProcess:
        proc = InferdProcess(tmp_path / f"{role}-{len(procs)}", *args, command=role,
                             env={**cluster_env, **env})
        procs.append(proc)
        return proc.start()

    yield run
    for proc in procs:
        proc.stop()


def submit(http: httpx.Client, model: str, text: str, **extra: Any) -> dict[str, Any]:
    """POST /v1/jobs, retrying while the gateway has not yet learnt about ``model``."""
    body = {"endpoint": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": text}]}, **extra}
    end = time.monotonic() + 30
    while True:
        response = http.post("/v1/jobs", json=body)
        if response.status_code != 404 or time.monotonic() > end:
            assert response.status_code == 202, response.text
            job: dict[str, Any] = response.json()
            return job
        time.sleep(0.2)


def wait_finished(http: httpx.Client, job_ids: list[str], timeout: float = 120
                  ) -> dict[str, dict[str, Any]]:
    """Each job once it has finished, read in turn: a job still running is read again until
    it ends (one request per poll, not one per unfinished job). ``timeout`` bounds the wait
    for the next job to finish, so a long list gets time in proportion to its length."""
    done: dict[str, dict[str, Any]] = {}
    end = time.monotonic() + timeout
    for job_id in job_ids:
        while True:
            job = http.get(f"/v1/jobs/{job_id}").json()
            if job["status"] in ("completed", "failed", "cancelled"):
                break
            assert time.monotonic() < end, \
                f"{len(job_ids) - len(done)} jobs did not finish; {job_id}: {job}"
            time.sleep(0.1)
        done[job_id] = job
        end = time.monotonic() + timeout  # progress: the next job gets the whole wait
    return done
