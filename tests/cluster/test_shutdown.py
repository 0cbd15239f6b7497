"""SIGTERM (a rollout, a scale-in): a worker stops taking jobs and lets the running ones finish
within ``INFERD_SHUTDOWN_GRACE_SECONDS``; what outlives the grace goes back to the queue at once
(pending again, the attempt not counted) and another worker finishes it, each job once. A
gateway finishes the streams in flight within the same grace."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.cluster.conftest import ECHO, migrate, submit, wait_finished
from tests.helpers import InferdProcess, port_open, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]

WORDS = "one two three four five six seven eight"


def test_sigterm_with_jobs_in_flight_exits_cleanly_and_hands_the_jobs_back(
        start: Callable[..., InferdProcess], cluster_env: dict[str, str]) -> None:
    assert migrate(cluster_env).returncode == 0
    # the "slow" model answers a word every 0.5 s: eight words keep each job running
    # a grace of 1 s: the 4 s jobs outlive it and are handed back
    first = start("worker", "--model", "slow", INFERD_JOB_CONCURRENCY="3",
                  INFERD_SHUTDOWN_GRACE_SECONDS="1")
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


def test_a_job_shorter_than_the_grace_finishes_on_the_stopping_worker(
        start: Callable[..., InferdProcess], cluster_env: dict[str, str]) -> None:
    assert migrate(cluster_env).returncode == 0
    worker = start("worker", "--model", "slow", INFERD_SHUTDOWN_GRACE_SECONDS="30")
    gateway = start("gateway")
    words = " ".join(f"w{i}" for i in range(20))  # 20 words, 0.5 s each: a 10 s job
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        job_id = submit(http, "slow", words)["id"]
        later = submit(http, "slow", "taken after the stop")["id"]
        end = time.monotonic() + 60
        while http.get(f"/v1/jobs/{job_id}").json()["status"] != "running":
            assert time.monotonic() < end, "the worker did not start the job"
            time.sleep(0.05)
        assert worker.proc is not None
        worker.proc.terminate()
        try:
            code = worker.proc.wait(90)  # a deadline for a hang, not a performance bound
        except subprocess.TimeoutExpired:
            worker.kill()
            pytest.fail(f"the worker did not exit after SIGTERM:\n{worker.log()}")
        assert code in (0, -signal.SIGTERM), worker.log()
        job = http.get(f"/v1/jobs/{job_id}").json()
        # finished by the worker that was stopped, in its first attempt
        assert job["status"] == "completed", job
        assert job["attempts"] == 1
        assert job["result"]["choices"][0]["message"]["content"] == words
        # a stopping worker takes no new job: the second one waits for the next worker
        assert http.get(f"/v1/jobs/{later}").json()["status"] == "pending"
        start("worker", "--model", "slow")
        done = wait_finished(http, [later])
    assert done[later]["status"] == "completed"
    assert done[later]["attempts"] == 1


def test_a_stream_in_flight_survives_a_gateway_sigterm(tmp_path: Path) -> None:
    server = InferdProcess(tmp_path / "serve", "--no-bundled", command="serve", env={
        "INFERD_MODELS": ECHO, "INFERD_SHUTDOWN_GRACE_SECONDS": "30"})
    server.start()
    words = [f"w{i}" for i in range(40)]  # 0.5 s a word: a 20 s stream
    pieces: list[str] = []
    try:
        with httpx.Client(base_url=server.url, timeout=60) as http, http.stream(
                "POST", "/v1/chat/completions", json={
                    "model": "slow", "stream": True,
                    "messages": [{"role": "user", "content": " ".join(words)}]}) as response:
            assert response.status_code == 200
            lines = response.iter_lines()
            for line in lines:
                if line.startswith("data: {"):
                    pieces.append(json.loads(line[6:])["choices"][0]["delta"].get(
                        "content") or "")
                    if "".join(pieces).strip():
                        break
            assert server.proc is not None
            server.proc.terminate()  # mid-stream
            # a new connection is refused at once: the listener is closed
            wait_for(lambda: not port_open(server.port), within=30,
                     what="the listener to close")
            finished = False
            for line in lines:
                if line == "data: [DONE]":
                    finished = True
                elif line.startswith("data: {"):
                    pieces.append(json.loads(line[6:])["choices"][0]["delta"].get(
                        "content") or "")
        assert finished, server.log()
        assert "".join(pieces).split() == words
        code = server.proc.wait(60)  # a deadline for a hang, not a performance bound
        assert code in (0, -signal.SIGTERM), server.log()
    finally:
        server.kill()
