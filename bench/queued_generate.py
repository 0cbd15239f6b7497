"""What inferd adds to the queued generate system's round trip, both ways, side by side:
sequential chats (one at a time, so the figure is latency, not the model), median and p95 in
milliseconds, and the ratios.

- ``system → its worker``: the system's backend (its real package) and its ``LLMWrap`` worker
  with its fake model (answers at once): the system as it runs today.
- ``inferd → its worker``: ``inferd serve`` with a ``queued_generate`` replica in front of the
  same worker (OpenAI API → task → Redis records).
- ``system → inferd worker``: the system's backend with ``inferd worker`` (echo model)
  consuming its queue instead of its worker.

Needs RabbitMQ on 127.0.0.1:5672, redis-server on the PATH (a private one is started on a free
port) and .venv-protollm (scripts/protollm.sh).

    .venv/bin/python bench/queued_generate.py [--requests 200]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import redis

from harness import ROOT, Service, free_port, median, pct, start_inferd, stop

PROTOLLM = ROOT / ".venv-protollm" / "bin" / "python"
AMQP = "amqp://guest:guest@127.0.0.1:5672/"


def figures(seconds: list[float], lost: int = 0) -> dict[str, float]:
    ms = [s * 1000 for s in seconds]
    return {"median_ms": round(median(ms), 2), "p95_ms": round(pct(ms, 95), 2),
            "lost": lost}


def backend_loop(queue: str, redis_port: int, requests: int) -> dict[str, float]:
    out = subprocess.run([str(PROTOLLM), "bench/protollm_loop.py", queue, str(redis_port),
                          str(requests)], cwd=ROOT, capture_output=True, text=True,
                         timeout=900)
    if out.returncode:
        raise RuntimeError(f"the system's backend failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return figures(result["seconds"], result["lost"])


def llmwrap(logdir: Path, queue: str, redis_port: int) -> Service:
    worker = Service(f"llmwrap-{queue}", [str(PROTOLLM), "tests/protollm_llmwrap.py", queue,
                                          str(redis_port)], 0, logdir, cwd=ROOT)
    worker.start()
    log = logdir / f"llmwrap-{queue}.log"
    deadline = time.monotonic() + 60
    while "consuming" not in log.read_text(errors="replace"):
        assert worker.alive() and time.monotonic() < deadline, worker.log_tail()
        time.sleep(0.1)
    return worker


def inferd_front(tmp: Path, queue: str, redis_port: int, requests: int) -> list[float]:
    model = {"name": "legacy", "replicas": [{
        "kind": "queued_generate", "url": "amqp://127.0.0.1:5672/", "api_key": "guest:guest",
        "options": {"queue": queue, "redis_url": f"redis://127.0.0.1:{redis_port}/0"}}]}
    proc, url = start_inferd(tmp / "serve", ["--no-bundled"], {
        "INFERD_MODELS": json.dumps([{"name": "echo", "kind": "echo"}]),
        "INFERD_REMOTE_MODELS": json.dumps([model])})
    try:
        seconds = []
        with httpx.Client(base_url=url, timeout=60) as http:
            for i in range(requests):
                body = {"model": "legacy", "max_tokens": 8,
                        "messages": [{"role": "user", "content": f"hello {i}"}]}
                started = time.perf_counter()
                response = http.post("/v1/chat/completions", json=body)
                seconds.append(time.perf_counter() - started)
                assert response.status_code == 200, response.text
        return seconds
    finally:
        stop(proc)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    if not PROTOLLM.exists():
        sys.exit("run scripts/protollm.sh first (the system's package in .venv-protollm)")
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        port = free_port()
        store = Service("redis", ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                                  "--save", "", "--appendonly", "no", "--dir", name], port, tmp)
        store.start()
        client = redis.Redis(port=port)
        deadline = time.monotonic() + 30
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, store.log_tail()
                time.sleep(0.1)
        results: dict[str, dict[str, float]] = {}
        queues = [f"bench-protollm-{uuid.uuid4().hex[:8]}" for _ in range(2)]
        try:
            worker = llmwrap(tmp, queues[0], port)
            try:
                backend_loop(queues[0], port, 5)  # warm up
                results["system → its worker"] = backend_loop(queues[0], port, args.requests)
                results["inferd → its worker"] = figures(
                    inferd_front(tmp, queues[0], port, args.requests))
            finally:
                worker.stop()
            proc, _ = start_inferd(tmp / "worker", ["--model", "echo"], {
                "INFERD_MODELS": json.dumps([{"name": "echo", "kind": "echo"}]),
                "INFERD_BROKER_URL": AMQP, "INFERD_BROKER_PREFIX": queues[1],
                "INFERD_REDIS_URL": f"redis://127.0.0.1:{port}/0",
                "INFERD_QUEUED_GENERATE_QUEUE": queues[1]}, command="worker")
            try:
                backend_loop(queues[1], port, 5)
                results["system → inferd worker"] = backend_loop(queues[1], port,
                                                                 args.requests)
            finally:
                stop(proc)
        finally:
            store.stop()
            delete = ("import aio_pika, asyncio, sys\n"
                      "async def main():\n"
                      f"    c = await aio_pika.connect('{AMQP}')\n"
                      "    async with c:\n"
                      "        ch = await c.channel()\n"
                      "        for q in sys.argv[1:]:\n"
                      "            await ch.queue_delete(q)\n"
                      "            await ch.queue_delete(q + '.jobs.echo')\n"
                      "            await ch.queue_delete(q + '.rpc.echo')\n"
                      "asyncio.run(main())\n")
            subprocess.run([sys.executable, "-c", delete, *queues], check=False)
    base = results["system → its worker"]["median_ms"]
    print(f"{args.requests} sequential chats each")
    print(f"{'path':28} {'median ms':>10} {'p95 ms':>10} {'x system':>9} {'answers lost':>13}")
    for path, row in results.items():
        print(f"{path:28} {row['median_ms']:10.2f} {row['p95_ms']:10.2f} "
              f"{row['median_ms'] / base:9.2f} {int(row['lost']):13d}")


if __name__ == "__main__":
    main()
