"""A job whose runs end their process is quarantined, not retried blindly: after the first
crash it runs alone in its process ("on probation"), so a second crash is its own, and it
fails with ``job_quarantined`` while the next process serves the other jobs. A real
``kill -9`` of ``inferd serve`` while the job runs, twice, stands for the crash."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from inferd.settings import bundled_gguf_path
from tests.helpers import InferdProcess, wait_for

MODEL = "smollm2-135m-instruct"
# two loops per model: without probation an ordinary job would run beside the suspect one
ENV = {"INFERD_JOB_LEASE_SECONDS": "1.5", "INFERD_JOB_SWEEP_SECONDS": "0.3",
       "INFERD_JOB_CONCURRENCY": "2"}
# The bundled model's end-of-generation tokens, banned: the long job is still generating when
# the process is killed, whatever the model would prefer.
NO_END = {"0": -100, "2": -100, "4": -100}


def submit(http: httpx.Client, max_tokens: int) -> dict[str, Any]:
    response = http.post("/v1/jobs", json={"endpoint": "/v1/completions", "body": {
        "model": MODEL, "prompt": "1, 2, 3, 4, 5, 6,", "max_tokens": max_tokens,
        "temperature": 0, "logit_bias": NO_END}})
    assert response.status_code == 202, response.text
    job: dict[str, Any] = response.json()
    return job


def tokens_of_attempt(http: httpx.Client, job_id: str, attempt: int, count: int) -> None:
    """Until ``count`` token events of the job's attempt ``attempt`` are stored."""
    with http.stream("GET", f"/v1/jobs/{job_id}/events") as response:
        current, tokens, kind = 1, 0, ""
        for raw in response.iter_lines():
            if raw.startswith("event: "):
                kind = raw[7:]
                tokens += kind == "token" and current == attempt
            elif raw.startswith("data: ") and kind == "reset":
                current = httpx.Response(200, content=raw[6:]).json()["attempt"]
            if tokens >= count:
                return
    raise AssertionError(f"the job ended before {count} tokens of attempt {attempt}")


def test_a_job_whose_runs_end_the_process_is_quarantined(tmp_path: Path) -> None:
    args = ("--no-bundled", "--model", f"{MODEL}={bundled_gguf_path()}")
    server = InferdProcess(tmp_path, *args, env=ENV)
    with server, httpx.Client(base_url=server.url, timeout=60) as http:
        suspect = submit(http, 300)["id"]
        tokens_of_attempt(http, suspect, 1, 2)
        server.kill()  # the first crash: the job is only suspected

    with (InferdProcess(tmp_path, *args, port=server.port, env=ENV) as again,
          httpx.Client(base_url=again.url, timeout=60) as http):
        tokens_of_attempt(http, suspect, 2, 2)  # run again, on probation
        bystander = submit(http, 4)["id"]
        # alone: the ordinary job waits although a second worker loop is free
        tokens_of_attempt(http, suspect, 2, 6)
        assert http.get(f"/v1/jobs/{bystander}").json()["status"] == "pending"
        assert http.get(f"/v1/jobs/{suspect}").json()["status"] == "running"
        again.kill()  # the second crash, while it ran alone: its own

    with (InferdProcess(tmp_path, *args, port=server.port, env=ENV) as third,
          httpx.Client(base_url=third.url, timeout=60) as http):
        def finished(job_id: str) -> dict[str, Any] | None:
            job: dict[str, Any] = http.get(f"/v1/jobs/{job_id}").json()
            return job if job["status"] in ("completed", "failed", "cancelled") else None

        quarantined = wait_for(lambda: finished(suspect), within=120, what="the quarantine")
        assert quarantined["status"] == "failed" and quarantined["attempts"] == 2
        assert quarantined["error"]["code"] == "job_quarantined"
        assert "2 times" in quarantined["error"]["message"]
        # the next process keeps serving: the job that waited, and a new one
        served = wait_for(lambda: finished(bystander), within=120, what="the waiting job")
        assert served["status"] == "completed" and served["attempts"] == 1
        fresh = submit(http, 4)["id"]
        done = wait_for(lambda: finished(fresh), within=120, what="a new job")
        assert done["status"] == "completed"
