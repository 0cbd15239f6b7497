"""Processes sharing one database take only the jobs of the models they can run.

An ``inferd gateway`` (no local models) beside an ``inferd serve`` on the same PostgreSQL
database: the gateway's sweep must leave the jobs of serve's local model alone, instead of
claiming them and failing them with ``model_not_found``.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import _pg_exec
from tests.helpers import InferdProcess, require_service


@pytest.fixture
def postgres_url() -> Iterator[str]:
    require_service("postgresql")
    name = f"inferd_{uuid.uuid4().hex[:12]}"
    asyncio.run(_pg_exec(f'CREATE DATABASE "{name}"'))
    yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    asyncio.run(_pg_exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def test_gateway_leaves_serves_local_jobs_alone(tmp_path: Path, postgres_url: str) -> None:
    # a slow echo model, one job at a time: the jobs wait pending for seconds, while the
    # gateway sweeps every tenth of a second
    models = json.dumps([{"name": "slow-echo", "kind": "echo", "echo_delay": 0.05}])
    serve = InferdProcess(tmp_path / "serve", "--no-bundled", env={
        "INFERD_DATABASE_URL": postgres_url, "INFERD_MODELS": models,
        "INFERD_JOB_CONCURRENCY": "1"})
    gateway = InferdProcess(tmp_path / "gateway", command="gateway", env={
        "INFERD_DATABASE_URL": postgres_url, "INFERD_JOB_SWEEP_SECONDS": "0.1"})
    with serve, gateway, httpx.Client(base_url=serve.url, timeout=30) as http:
        words = " ".join(f"w{i}" for i in range(20))
        ids = [http.post("/v1/jobs", json={
            "endpoint": "/v1/chat/completions",
            "body": {"model": "slow-echo", "max_tokens": 20,
                     "messages": [{"role": "user", "content": words}]}}).json()["id"]
               for _ in range(6)]
        deadline = time.monotonic() + 120
        jobs: dict[str, dict[str, object]] = {}
        while time.monotonic() < deadline:
            jobs = {i: http.get(f"/v1/jobs/{i}").json() for i in ids}
            if all(j["status"] in ("completed", "failed", "cancelled") for j in jobs.values()):
                break
            time.sleep(0.2)
        assert [j["status"] for j in jobs.values()] == ["completed"] * len(ids), jobs
        # the gateway sees the same jobs (one database) and ran none of them
        seen = httpx.get(f"{gateway.url}/v1/jobs/{ids[0]}", timeout=30).json()
        assert seen["status"] == "completed"
