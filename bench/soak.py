"""Soak: ``inferd serve`` under steady mixed load for N minutes, watched for leaks.

The load is every kind of work at once: sync chat completions, streamed chat completions,
embeddings, async jobs (submitted, then followed on their event stream to the end) and a batch
every ``--batch-every`` seconds, on the echo engine (so that what is measured is inferd, not a
model). First the capacity is measured (a closed loop of the same mix for ``--probe`` seconds),
then the mix is offered open-loop at ``--fraction`` of it (half by default).

Every ``--report`` seconds (a minute by default) it prints the server's RSS, open file
descriptors and asyncio tasks (``inferd_asyncio_tasks`` from ``/metrics``), the p50/p99 latency
and the errors of that interval. It exits 1 when any request failed (an error status, a wrong
answer, a job or batch that did not complete), or when, from the first report to the last,
the RSS grew by more than ``--rss-growth-mb`` or the descriptors by more than
``--fd-growth``. The last line is the summary as JSON.

    .venv/bin/python bench/soak.py [--minutes 30] [--fraction 0.5]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import re
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from harness import load_average, pct, start_inferd, stop

ECHO = json.dumps([{"name": "echo", "kind": "echo", "echo_delay": 0.001}])
# Of every 10 operations: 4 sync chats, 3 streamed chats, 2 embeddings, 1 job.
MIX = ("chat",) * 4 + ("stream",) * 3 + ("embed",) * 2 + ("job",)


@dataclass
class Window:
    """What one reporting interval saw."""

    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@dataclass
class Load:
    http: httpx.AsyncClient
    window: Window = field(default_factory=Window)
    errors: list[str] = field(default_factory=list)
    batches: list[tuple[str, list[str]]] = field(default_factory=list)
    counter: itertools.count[int] = field(default_factory=itertools.count)
    done: int = 0

    def fail(self, message: str) -> None:
        self.window.errors.append(message)
        self.errors.append(message)

    def words(self) -> str:
        n = next(self.counter)
        return " ".join(f"s{n}w{i}" for i in range(4 + n % 12))


def chat(words: str, **extra: Any) -> dict[str, Any]:
    return {"model": "echo", "messages": [{"role": "user", "content": words}], **extra}


async def op_chat(load: Load) -> None:
    words = load.words()
    response = await load.http.post("/v1/chat/completions", json=chat(words))
    if response.status_code != 200:
        raise AssertionError(f"chat {response.status_code}: {response.text[:200]}")
    if response.json()["choices"][0]["message"]["content"] != words:
        raise AssertionError("chat: wrong answer")


async def op_stream(load: Load) -> None:
    words = load.words()
    text, done = "", False
    async with load.http.stream("POST", "/v1/chat/completions",
                                json=chat(words, stream=True)) as response:
        if response.status_code != 200:
            raise AssertionError(f"stream {response.status_code}")
        async for line in response.aiter_lines():
            if line == "data: [DONE]":
                done = True
            elif line.startswith("data: "):
                event = json.loads(line[6:])
                if "error" in event:
                    raise AssertionError(f"stream error event: {event['error']}")
                text += "".join(c["delta"].get("content") or "" for c in event["choices"])
    if not done or text != words:
        raise AssertionError("stream: incomplete or wrong answer")


async def op_embed(load: Load) -> None:
    response = await load.http.post("/v1/embeddings", json={"model": "echo",
                                                            "input": [load.words(), "x"]})
    if response.status_code != 200 or len(response.json()["data"]) != 2:
        raise AssertionError(f"embeddings {response.status_code}: {response.text[:200]}")


async def op_job(load: Load) -> None:
    words = load.words()
    submitted = await load.http.post("/v1/jobs", json={"endpoint": "/v1/chat/completions",
                                                       "body": chat(words)})
    if submitted.status_code != 202:
        raise AssertionError(f"job submit {submitted.status_code}: {submitted.text[:200]}")
    job_id = submitted.json()["id"]
    final = None
    async with load.http.stream("GET", f"/v1/jobs/{job_id}/events") as response:
        kind = ""
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: ") and kind in ("completed", "failed", "cancelled"):
                final = json.loads(line[6:])
                break
    if final is None or final["status"] != "completed" or (
            final["result"]["choices"][0]["message"]["content"] != words):
        raise AssertionError(f"job {job_id} did not complete with its answer: {final}")


OPS: dict[str, Callable[[Load], Awaitable[None]]] = {
    "chat": op_chat, "stream": op_stream, "embed": op_embed, "job": op_job}


async def timed(load: Load, kind: str) -> None:
    started = time.perf_counter()
    try:
        await OPS[kind](load)
    except Exception as exc:  # every failure is counted and shown
        load.fail(f"{kind}: {type(exc).__name__}: {exc}"[:300])
        return
    load.window.latencies.append((time.perf_counter() - started) * 1000)
    load.done += 1


async def submit_batch(load: Load) -> None:
    custom = [f"soak-{next(load.counter)}-{i}" for i in range(4)]
    lines = "\n".join(json.dumps({"custom_id": c, "method": "POST",
                                  "url": "/v1/chat/completions", "body": chat(c)})
                      for c in custom)
    try:
        upload = await load.http.post("/v1/files", data={"purpose": "batch"},
                                      files={"file": ("soak.jsonl", lines.encode())})
        batch = await load.http.post("/v1/batches", json={
            "input_file_id": upload.json()["id"], "endpoint": "/v1/chat/completions",
            "completion_window": "24h"})
        if batch.status_code != 200:
            raise AssertionError(f"batch {batch.status_code}: {batch.text[:200]}")
        load.batches.append((batch.json()["id"], custom))
    except Exception as exc:
        load.fail(f"batch: {type(exc).__name__}: {exc}"[:300])


async def check_batches(load: Load, wait: bool = False) -> None:
    """Completed batches must have every line answered; unfinished ones are kept (or, with
    ``wait``, waited for)."""
    pending = []
    for batch_id, custom in load.batches:
        deadline = time.monotonic() + (120 if wait else 0)
        while True:
            batch = (await load.http.get(f"/v1/batches/{batch_id}")).json()
            if batch["status"] in ("completed", "failed", "cancelled", "expired"):
                break
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.5)
        if batch["status"] not in ("completed", "failed", "cancelled", "expired"):
            if wait:
                load.fail(f"batch {batch_id} still {batch['status']}")
            else:
                pending.append((batch_id, custom))
            continue
        counts = batch["request_counts"]
        if batch["status"] != "completed" or counts != {"total": 4, "completed": 4, "failed": 0}:
            load.fail(f"batch {batch_id}: {batch['status']} {counts}")
            continue
        content = (await load.http.get(f"/v1/files/{batch['output_file_id']}/content")).text
        answered = sorted(json.loads(line)["custom_id"] for line in content.splitlines())
        if answered != sorted(custom):
            load.fail(f"batch {batch_id}: output {answered}")
    load.batches = pending


async def closed_loop(load: Load, seconds: float, clients: int) -> float:
    """Operations per second of the mix with ``clients`` concurrent clients."""
    end = time.monotonic() + seconds
    rng = random.Random(1)
    done_before = load.done

    async def client() -> None:
        while time.monotonic() < end:
            await timed(load, rng.choice(MIX))

    started = time.monotonic()
    await asyncio.gather(*(client() for _ in range(clients)))
    return (load.done - done_before) / (time.monotonic() - started)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def tasks(http: httpx.AsyncClient) -> int:
    text = (await http.get("/metrics")).text
    found = re.search(r"^inferd_asyncio_tasks (\S+)$", text, re.MULTILINE)
    return int(float(found.group(1))) if found else -1


@dataclass
class Sample:
    minute: float
    rss_mb: float
    fds: int
    tasks: int
    requests: int
    p50_ms: float
    p99_ms: float
    errors: int


async def soak(url: str, pid: int, args: argparse.Namespace) -> dict[str, Any]:
    # idle connections are dropped before the server's keep-alive timeout (uvicorn: 5 s), so
    # that no request is written to a connection the server is closing at that moment
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=64,
                          keepalive_expiry=2.0)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        load = Load(http)
        capacity = await closed_loop(load, args.probe, clients=16)
        if load.errors:
            return {"capacity": capacity, "errors": load.errors, "samples": []}
        rate = capacity * args.fraction
        print(f"capacity {capacity:.0f} ops/s (mix {'/'.join(MIX)}); offering {rate:.0f} "
              f"ops/s for {args.minutes} min; load average {load_average()}", flush=True)
        load.window = Window()
        rng = random.Random(2)
        running: set[asyncio.Task[None]] = set()
        samples: list[Sample] = []
        started = time.monotonic()
        end = started + args.minutes * 60
        next_report = started + args.report
        next_batch = started
        behind = 0
        tick = 0
        while time.monotonic() < end:
            now = time.monotonic()
            if now >= next_batch:
                next_batch += args.batch_every
                batch = asyncio.create_task(submit_batch(load))
                running.add(batch)
                batch.add_done_callback(running.discard)
            if len(running) < args.max_in_flight:
                task = asyncio.create_task(timed(load, rng.choice(MIX)))
                running.add(task)
                task.add_done_callback(running.discard)
            else:
                behind += 1
            tick += 1
            # open loop: the n-th operation starts at n / rate seconds, whatever the others do
            await asyncio.sleep(max(0.0, started + tick / rate - time.monotonic()))
            if time.monotonic() >= next_report:
                next_report += args.report
                await check_batches(load)
                window, load.window = load.window, Window()
                sample = Sample(minute=round((time.monotonic() - started) / 60, 2),
                                rss_mb=round(rss_mb(pid), 1), fds=open_fds(pid),
                                tasks=await tasks(http), requests=len(window.latencies),
                                p50_ms=round(pct(window.latencies, 50), 1),
                                p99_ms=round(pct(window.latencies, 99), 1),
                                errors=len(window.errors))
                samples.append(sample)
                print(f"min {sample.minute:5.2f}: RSS {sample.rss_mb:7.1f} MB, fds "
                      f"{sample.fds:4d}, tasks {sample.tasks:4d}, {sample.requests} requests "
                      f"({sample.requests / args.report:.0f}/s), p50 {sample.p50_ms} ms, p99 "
                      f"{sample.p99_ms} ms, errors {sample.errors}"
                      + (f" ({window.errors[0]})" if window.errors else ""), flush=True)
        await asyncio.gather(*running, return_exceptions=True)
        await check_batches(load, wait=True)
        return {"capacity": round(capacity, 1), "offered_per_s": round(rate, 1),
                "behind": behind, "errors": load.errors, "samples": samples}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--fraction", type=float, default=0.5,
                        help="share of the measured capacity offered")
    parser.add_argument("--probe", type=float, default=15.0,
                        help="seconds of closed-loop load that measure the capacity")
    parser.add_argument("--report", type=float, default=60.0, help="seconds between reports")
    parser.add_argument("--batch-every", type=float, default=20.0)
    parser.add_argument("--max-in-flight", type=int, default=200)
    parser.add_argument("--rss-growth-mb", type=float, default=64.0)
    parser.add_argument("--fd-growth", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="inferd-soak-") as tmp:
        proc, url = start_inferd(Path(tmp), ["--no-bundled"], {
            "INFERD_MODELS": ECHO, "INFERD_AUTH": "off", "INFERD_JOB_CONCURRENCY": "4",
            "INFERD_JOB_EVENT_FLUSH_SECONDS": "0.05"})
        try:
            result = asyncio.run(soak(url, proc.pid, args))
        finally:
            stop(proc)
    samples: list[Sample] = result["samples"]
    problems = [f"request errors: {len(result['errors'])}, first: {result['errors'][:3]}"
                ] if result["errors"] else []
    if len(samples) < 2:
        problems.append("fewer than two reports: nothing to compare")
    else:
        first, last = samples[0], samples[-1]
        if last.rss_mb - first.rss_mb > args.rss_growth_mb:
            problems.append(f"RSS grew {last.rss_mb - first.rss_mb:.1f} MB "
                            f"(bound {args.rss_growth_mb})")
        if last.fds - first.fds > args.fd_growth:
            problems.append(f"open descriptors grew {last.fds - first.fds} "
                            f"(bound {args.fd_growth})")
    for problem in problems:
        print("PROBLEM:", problem)
    summary = {"minutes": args.minutes, "capacity_per_s": result["capacity"],
               "offered_per_s": result.get("offered_per_s"), "behind": result.get("behind"),
               "requests": sum(s.requests for s in samples), "errors": len(result["errors"]),
               "rss_mb_first": samples[0].rss_mb if samples else None,
               "rss_mb_last": samples[-1].rss_mb if samples else None,
               "fds_first": samples[0].fds if samples else None,
               "fds_last": samples[-1].fds if samples else None,
               "tasks_first": samples[0].tasks if samples else None,
               "tasks_last": samples[-1].tasks if samples else None,
               "problems": len(problems)}
    print(json.dumps(summary))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
