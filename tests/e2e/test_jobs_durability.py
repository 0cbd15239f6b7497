"""A job survives ``kill -9`` of ``inferd serve`` mid-generation: after a restart it runs again
and completes, with its result stored once."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import orjson

from inferd.settings import bundled_gguf_path
from tests.helpers import InferdProcess

MODEL = "smollm2-135m-instruct"
FAST_LEASES = {"INFERD_JOB_LEASE_SECONDS": "1.5", "INFERD_JOB_SWEEP_SECONDS": "0.3"}
# The bundled model's end-of-generation tokens, banned: every run goes to max_tokens whatever
# the model would prefer (greedy decoding never picks a token 100 logits down).
NO_END = {"0": -100, "2": -100, "4": -100}


def test_job_survives_kill_9_mid_generation(tmp_path: Path) -> None:
    args = ("--no-bundled", "--model", f"{MODEL}={bundled_gguf_path()}")
    server = InferdProcess(tmp_path, *args, env=FAST_LEASES)
    with server:
        http = httpx.Client(base_url=server.url, timeout=30)
        queued = [http.post("/v1/jobs", json={
            "endpoint": "/v1/completions",
            "body": {"model": MODEL, "prompt": "1, 2, 3, 4, 5, 6,", "max_tokens": 300,
                     "temperature": 0, "logit_bias": NO_END}}).json() for _ in range(2)]
        first = queued[0]["id"]
        # wait until tokens of the first job are stored, then kill the process at once
        with http.stream("GET", f"/v1/jobs/{first}/events") as response:
            tokens = 0
            for raw in response.iter_lines():
                tokens += raw == "event: token"
                if tokens >= 2:
                    break
        assert http.get(f"/v1/jobs/{first}").json()["status"] == "running"
        server.kill()
        http.close()

    with InferdProcess(tmp_path, *args, port=server.port, env=FAST_LEASES) as again:
        http = httpx.Client(base_url=again.url, timeout=30)
        deadline = time.monotonic() + 120
        jobs = {}
        while time.monotonic() < deadline:
            jobs = {j["id"]: http.get(f"/v1/jobs/{j['id']}").json() for j in queued}
            if all(j["status"] == "completed" for j in jobs.values()):
                break
            time.sleep(0.2)
        assert all(j["status"] == "completed" for j in jobs.values()), jobs
        job = jobs[first]
        assert job["attempts"] == 2
        listed = http.get("/v1/jobs", params={"limit": 100}).json()["data"]
        assert sorted(j["id"] for j in listed) == sorted(jobs)  # no duplicate job appeared
        text = job["result"]["choices"][0]["text"]
        assert job["usage"]["completion_tokens"] == 300 and text
        # the event log holds the second attempt only: a reset, then exactly the result's text
        events = []
        with http.stream("GET", f"/v1/jobs/{first}/events") as response:
            kind = ""
            for raw in response.iter_lines():
                if raw.startswith("event: "):
                    kind = raw[7:]
                elif raw.startswith("data: "):
                    events.append((kind, orjson.loads(raw[6:])))
        assert events[0][0] == "reset" and events[0][1]["attempt"] == 2
        assert "".join(d["text"] for k, d in events if k == "token") == text
        assert events[-1][0] == "completed"
        http.close()
