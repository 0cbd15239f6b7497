"""Gateway and workers as separate processes on PostgreSQL and RabbitMQ."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest

from tests.cluster.conftest import migrate, submit, wait_finished
from tests.helpers import InferdProcess

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
        start("worker", "--model", "slow")
        first.kill()
        finished = wait_finished(http, [job["id"]])[job["id"]]
    assert finished["status"] == "completed", finished
    assert finished["attempts"] == 2  # the killed run, then the one that finished
    assert finished["result"]["choices"][0]["message"]["content"] == \
        "one two three four five six seven eight"
