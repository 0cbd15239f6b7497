"""A worker stopped with SIGTERM while it runs jobs exits cleanly and soon: the jobs it was
running go back to the queue (pending again, the attempt not counted) and another worker
finishes them, each once."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable

import httpx
import pytest

from tests.cluster.conftest import migrate, submit, wait_finished
from tests.helpers import InferdProcess

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]

WORDS = "one two three four five six seven eight"


def test_sigterm_with_jobs_in_flight_exits_cleanly_and_hands_the_jobs_back(
        start: Callable[..., InferdProcess], cluster_env: dict[str, str]) -> None:
    assert migrate(cluster_env).returncode == 0
    # the "slow" model answers a word every 0.5 s: eight words keep each job running
    first = start("worker", "--model", "slow", INFERD_JOB_CONCURRENCY="3")
    gateway = start("gateway")
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        ids = [submit(http, "slow", f"{WORDS} {i}")["id"] for i in range(6)]
        end = time.monotonic() + 60
        while sum(http.get(f"/v1/jobs/{i}").json()["status"] == "running" for i in ids) < 3:
            assert time.monotonic() < end, "the worker did not start three jobs"
            time.sleep(0.05)
        assert first.proc is not None
        first.proc.terminate()  # SIGTERM, as Kubernetes and docker stop send it
        try:
            code = first.proc.wait(60)  # a deadline for a hang, not a performance bound
        except subprocess.TimeoutExpired:
            first.kill()
            pytest.fail(f"the worker did not exit after SIGTERM:\n{first.log()}")
        # a clean stop: the shutdown ran to its end (uvicorn then re-raises the signal it
        # caught, so the exit status is that of SIGTERM)
        assert code in (0, -signal.SIGTERM), first.log()
        assert "Application shutdown complete" in first.log()
        states = {i: http.get(f"/v1/jobs/{i}").json() for i in ids}
        # nothing is left running under the stopped worker: each job is pending again
        # (handed back, its attempt not counted) or finished
        assert {j["status"] for j in states.values()} <= {"pending", "completed"}, states
        assert all(j["attempts"] == 0 for j in states.values() if j["status"] == "pending")
        start("worker", "--model", "slow", INFERD_JOB_CONCURRENCY="6")
        done = wait_finished(http, ids)
    for i, job_id in enumerate(ids):
        job = done[job_id]
        assert job["status"] == "completed", job
        assert job["attempts"] == 1  # the stopped run was handed back, not counted
        assert job["result"]["choices"][0]["message"]["content"] == f"{WORDS} {i}"
