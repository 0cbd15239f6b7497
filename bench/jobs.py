"""Job throughput of ``inferd serve`` on SQLite: accepted jobs/s and completed jobs/s.

accepted: ``POST /v1/jobs`` answered 202, i.e. the job row is committed (durably, WAL) before
the answer. completed: from the first submission until no job is pending or running.
Two runs side by side: the echo engine (answers at once, so the figure measures inferd) and the
bundled SmolLM2 model (so it measures the model).

    .venv/bin/python bench/jobs.py [--echo-jobs 2000] [--model-jobs 16] [--clients 16]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from harness import start_inferd, stop

CHAT_MODEL = "smollm2-135m-instruct"


async def run(url: str, body: dict[str, Any], jobs: int, clients: int) -> dict[str, float]:
    async with httpx.AsyncClient(base_url=url, timeout=600,
                                 limits=httpx.Limits(max_connections=clients)) as http:
        todo = iter(range(jobs))
        started = time.perf_counter()

        async def submitter() -> None:
            for _ in todo:
                response = await http.post("/v1/jobs", json=body)
                assert response.status_code == 202, response.text

        await asyncio.gather(*(submitter() for _ in range(clients)))
        accepted = time.perf_counter() - started
        while True:
            busy = 0
            for status in ("pending", "running"):
                page = (await http.get("/v1/jobs", params={"status": status, "limit": 1})).json()
                busy += len(page["data"])
            if not busy:
                break
            await asyncio.sleep(0.02)
        done = time.perf_counter() - started
        failed = (await http.get("/v1/jobs", params={"status": "failed", "limit": 1})).json()
        assert not failed["data"], failed
    return {"jobs": jobs, "accepted_per_s": jobs / accepted, "completed_per_s": jobs / done}


def scenario(name: str, args: list[str], env: dict[str, str], body: dict[str, Any], jobs: int,
             clients: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_inferd(Path(tmp), args, env, timeout=300)
        try:
            figures = asyncio.run(run(url, body, jobs, clients))
        finally:
            stop(proc)
    print(f"{name:<22} jobs={int(figures['jobs']):>5}  accepted {figures['accepted_per_s']:8.1f}"
          f" jobs/s   completed {figures['completed_per_s']:8.1f} jobs/s", flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--echo-jobs", type=int, default=2000)
    parser.add_argument("--model-jobs", type=int, default=16)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--concurrency", type=int, default=4,
                        help="INFERD_JOB_CONCURRENCY for the echo run")
    opts = parser.parse_args()
    messages = [{"role": "user", "content": "Say hello to the benchmark."}]
    echo = scenario(
        "echo engine (SQLite)", ["--no-bundled"],
        {"INFERD_MODELS": '[{"name": "echo", "kind": "echo"}]',
         "INFERD_JOB_CONCURRENCY": str(opts.concurrency)},
        {"endpoint": "/v1/chat/completions", "body": {"model": "echo", "messages": messages}},
        opts.echo_jobs, opts.clients)
    model = scenario(
        "bundled SmolLM2", ["--no-bundled", "--model", f"{CHAT_MODEL}={bundled_gguf()}"], {},
        {"endpoint": "/v1/chat/completions",
         "body": {"model": CHAT_MODEL, "messages": messages, "max_tokens": 16}},
        opts.model_jobs, opts.clients)
    print(f"echo/bundled ratio: accepted {echo['accepted_per_s'] / model['accepted_per_s']:.2f}x,"
          f" completed {echo['completed_per_s'] / model['completed_per_s']:.1f}x")


def bundled_gguf() -> str:
    from inferd.settings import bundled_gguf_path  # inferd's venv runs the benchmark

    return bundled_gguf_path()


if __name__ == "__main__":
    main()
