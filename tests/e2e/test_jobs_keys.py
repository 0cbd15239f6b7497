"""Jobs run as the key that submitted them: its rate limit makes them wait, and a revoked
key's queued jobs fail instead of running. The queue's depth is a metric."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.helpers import InferdProcess, wait_for

ADMIN_KEY = "sk-test-admin-jobs-0123456789abcdef"
# "slow" takes ~2 s per answer, so a second job waits in the queue (one worker per model).
MODELS = json.dumps([{"name": "slow", "kind": "echo", "echo_delay": 0.2}])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InferdProcess]:
    env = {"INFERD_MODELS": MODELS, "INFERD_ADMIN_KEY": ADMIN_KEY,
           "INFERD_KEY_REFRESH_SECONDS": "0.3", "INFERD_JOB_CONCURRENCY": "1"}
    with InferdProcess(tmp_path_factory.mktemp("jobkeys"), "--no-bundled", env=env) as proc:
        yield proc


def client(server: InferdProcess, key: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"},
                        timeout=30)


def submit(http: httpx.Client, text: str) -> dict[str, Any]:
    response = http.post("/v1/jobs", json={"endpoint": "/v1/chat/completions", "body": {
        "model": "slow", "messages": [{"role": "user", "content": text}]}})
    assert response.status_code == 202, response.text
    job: dict[str, Any] = response.json()
    return job


def wait_finished(http: httpx.Client, job_id: str, timeout: float = 60) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        job: dict[str, Any] = http.get(f"/v1/jobs/{job_id}").json()
        return job if job["status"] in {"completed", "failed", "cancelled"} else None

    return wait_for(finished, within=timeout, what=f"job {job_id} finishing")


def test_queued_job_of_a_revoked_key_fails(server: InferdProcess) -> None:
    with client(server, ADMIN_KEY) as admin:
        created = admin.post("/admin/v1/keys", json={"name": "jobs-user"}).json()
        with client(server, created["key"]) as user:
            # A minute of words: the first job holds the only worker until it is cancelled
            # below, so the second is still queued when the key goes away, however busy the
            # machine.
            first = submit(user, " ".join(f"w{i}" for i in range(300)))
            second = submit(user, "this one waits in the queue")
            metrics = admin.get("/metrics").text
            depth = [line for line in metrics.splitlines()
                     if line.startswith("inferd_queue_depth")]
            assert depth and float(depth[0].split()[-1]) >= 1, depth
            assert admin.delete(f"/admin/v1/keys/{created['id']}").status_code in {200, 204}
            # the revocation reaches the key cache (refresh 0.3 s): the key stops working
            wait_for(lambda: user.get("/v1/jobs").status_code == 401,
                     what="the revocation reaching the key cache")
        assert admin.post(f"/v1/jobs/{first['id']}/cancel").status_code == 200
        done_first = wait_finished(admin, first["id"])
        done_second = wait_finished(admin, second["id"])
    # the second had not started when the key went away: it fails instead of running
    assert done_first["status"] == "cancelled"
    assert done_second["status"] == "failed"
    assert done_second["error"]["code"] == "key_revoked", done_second["error"]


def test_a_job_over_the_keys_rate_limit_waits_instead_of_failing(
        server: InferdProcess) -> None:
    with client(server, ADMIN_KEY) as admin:
        created = admin.post("/admin/v1/keys", json={"name": "limited", "rpm": 6}).json()
        with client(server, created["key"]) as user:
            jobs = [submit(user, f"job {i}") for i in range(7)]
        results = [wait_finished(admin, job["id"], timeout=60) for job in jobs]
    assert [r["status"] for r in results] == ["completed"] * 7, results
    # six fit in the minute's budget at once; the seventh waited for the bucket to refill
    # (one request every 10 s at 6 per minute)
    last = max(results, key=lambda r: r["finished_at"])
    assert last["finished_at"] - min(r["created_at"] for r in results) >= 5
