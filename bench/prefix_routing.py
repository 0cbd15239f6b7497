"""Prefix-cache-aware routing against least-busy and round-robin, through one and two gateways.

Two ``inferd engine`` replicas of the bundled model (``--threads`` thread each, ``--parallel``
sequences each, the prompt cache on as by default) register with a cluster on PostgreSQL;
``inferd gateway`` processes route to them. ``--conversations`` chats, each with a system
prompt of its own of about 500 tokens, take ``--turns`` turns: every round, each conversation
sends its next turn, in a shuffled order, ``--concurrency`` at a time. The same workload runs
with the model's routing set (admin API) to ``prefix``, ``least_busy`` and ``weighted`` (equal
weights: round-robin), each run with system prompts of its own (nothing cached from the run
before). Then round-robin and ``prefix`` through two gateways, the requests sent to each in
turn.

Per run: mean and p95 time to the first token (streamed, ``--tokens``-token greedy answers),
aggregate completion tokens/s over the run's wall time, and the cache hit rate (the prompt
tokens the engines report as ``cached_tokens``, over all prompt tokens); then mean TTFT of each
mode over round-robin's.

    .venv/bin/python bench/prefix_routing.py [--conversations 16] [--turns 4] [--tokens 8]
        [--concurrency 4] [--parallel 12] [--threads 1] [--seed 7]

Needs PostgreSQL and RabbitMQ (``bash scripts/services.sh``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx

from engine import MODEL, TOPICS, stream_chat_details
from harness import ROOT, free_port, load_average
from inferd.settings import bundled_gguf_path

PG = "postgresql://postgres@127.0.0.1:5432"
AMQP = "amqp://guest:guest@127.0.0.1:5672/"
MODES = ("prefix", "least_busy", "weighted")
RULES = (
    "Answer in two short sentences. Prefer plain words over jargon, and facts over "
    "guesses; when a question is vague, answer its most likely meaning. Never list more "
    "than three items, never repeat the question, and do not apologise. Keep every name, "
    "date and number you give exact, and say when you are unsure of one. "
)
QUESTIONS = [
    "What is it known for?",
    "Tell me more about its history.",
    "What would a visitor notice first?",
    "What is a common mistake about it?",
    "Summarise what we said so far.",
    "What should I read next about it?",
]


def system_prompt(run: str, i: int) -> str:
    """About 500 tokens, of its own per conversation and per run."""
    return (
        f"Run {run}. You are a patient guide to {TOPICS[i % len(TOPICS)]}, number {i}. " + RULES * 7
    )


@dataclass
class Turn:
    conversation: int
    turn: int
    ttft: float
    prompt: int
    cached: int
    completion: int


@dataclass
class Result:
    mode: str
    gateways: int
    turns: list[Turn]
    seconds: float

    def ttfts(self) -> list[float]:
        return [t.ttft for t in self.turns]

    def mean(self) -> float:
        return statistics.mean(self.ttfts())

    def p95(self) -> float:
        values = sorted(self.ttfts())
        return values[min(len(values) - 1, round(0.95 * (len(values) - 1)))]

    def tokens_per_second(self) -> float:
        return sum(t.completion for t in self.turns) / self.seconds

    def hit_rate(self) -> float:
        return sum(t.cached for t in self.turns) / max(1, sum(t.prompt for t in self.turns))

    def turn_ttft(self, turn: int) -> float:
        return statistics.mean(t.ttft for t in self.turns if t.turn == turn)

    def turn_hit_rate(self, turn: int) -> float:
        rows = [t for t in self.turns if t.turn == turn]
        return sum(t.cached for t in rows) / max(1, sum(t.prompt for t in rows))


async def workload(gateways: list[str], run: str, args: argparse.Namespace) -> Result:
    rng = random.Random(args.seed)
    talks = [
        [{"role": "system", "content": system_prompt(run, i)}] for i in range(args.conversations)
    ]
    rows: list[Turn] = []
    gate = asyncio.Semaphore(args.concurrency)
    sent = 0

    async def one(client: httpx.AsyncClient, i: int, turn: int, url: str) -> None:
        async with gate:
            talk = talks[i]
            talk.append({"role": "user", "content": QUESTIONS[turn % len(QUESTIONS)]})
            ttft, text, usage, _ = await stream_chat_details(client, url, talk, args.tokens)
            details = usage.get("prompt_tokens_details") or {}
            rows.append(
                Turn(
                    i,
                    turn,
                    ttft,
                    usage["prompt_tokens"],
                    int(details.get("cached_tokens") or 0),
                    usage["completion_tokens"],
                )
            )
            talk.append({"role": "assistant", "content": text})

    async with httpx.AsyncClient(timeout=900) as client:
        started = time.perf_counter()
        for turn in range(args.turns):
            order = list(range(args.conversations))
            rng.shuffle(order)
            jobs = []
            for i in order:
                jobs.append(one(client, i, turn, gateways[sent % len(gateways)]))
                sent += 1
            await asyncio.gather(*jobs)
        seconds = time.perf_counter() - started
    return Result("", len(gateways), rows, seconds)


@contextmanager
def cluster(tmp: Path) -> Iterator[dict[str, str]]:
    db = f"inferd_bench_{uuid.uuid4().hex[:8]}"
    asyncio.run(_pg(f'CREATE DATABASE "{db}"'))
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "INFERD_DATABASE_URL": f"{PG}/{db}",
        "INFERD_BROKER_URL": AMQP,
        "INFERD_BROKER_PREFIX": f"bench-{uuid.uuid4().hex[:8]}",
        "INFERD_MODELS": "[]",
        "INFERD_HEALTH_CHECK_INTERVAL": "1",
        "INFERD_LOG_LEVEL": "warning",
    }
    subprocess.run(
        [sys.executable, "-m", "inferd", "migrate"], env=env, check=True, capture_output=True
    )
    try:
        yield env
    finally:
        asyncio.run(_pg(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))


async def _pg(sql: str) -> None:
    conn = await asyncpg.connect(f"{PG}/postgres")
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def start(
    env: dict[str, str], procs: list[subprocess.Popen[bytes]], tmp: Path, role: str, **extra: str
) -> str:
    port = free_port()
    extra_args = ["--no-bundled"] if role == "engine" else []
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "inferd",
            role,
            *extra_args,
            "--port",
            str(port),
            "--data-dir",
            str(tmp / f"{role}-{port}"),
        ],
        env={**env, **extra},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    procs.append(proc)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{role} exited with {proc.returncode}")
        try:
            if httpx.get(url + "/ready", timeout=1).status_code == 200:
                return url
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{role} did not start")


def wait_replicas(gateway: str, n: int) -> None:
    """Until the gateway routes ``n`` available replicas of the model."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        models = httpx.get(gateway + "/admin/v1/models", timeout=10).json()["data"]
        for model in models:
            if (
                model["name"] == MODEL
                and sum(bool(r.get("available")) for r in model["replicas"]) >= n
            ):
                return
        time.sleep(0.3)
    raise RuntimeError(f"{gateway}: not {n} replicas of {MODEL}")


def set_routing(gateways: list[str], mode: str) -> None:
    answer = httpx.patch(
        f"{gateways[0]}/admin/v1/models/{MODEL}", json={"routing": mode}, timeout=30
    )
    answer.raise_for_status()
    deadline = time.monotonic() + 60  # every gateway syncs within its interval
    while time.monotonic() < deadline:
        if all(_routing(g) == mode for g in gateways):
            return
        time.sleep(0.2)
    raise RuntimeError(f"the gateways did not take routing {mode}")


def _routing(gateway: str) -> str:
    view = httpx.get(f"{gateway}/admin/v1/models/{MODEL}", timeout=10).json()
    return str(view["routing"])


def served(gateways: list[str]) -> dict[str, int]:
    """Requests each replica has answered, summed over the gateways."""
    counts: dict[str, int] = {}
    for gateway in gateways:
        for r in httpx.get(gateway + "/admin/v1/replicas", timeout=10).json()["data"]:
            counts[str(r["id"])] = counts.get(str(r["id"]), 0) + int(r["requests"])
    return counts


def report(results: list[Result], args: argparse.Namespace) -> None:
    print(
        f"\n{args.conversations} conversations x {args.turns} turns, {args.tokens}-token "
        f"greedy answers, {args.concurrency} at a time; 2 engines x {args.threads} "
        f"thread(s), {args.parallel} sequences each; load average {load_average()}\n"
    )
    print(
        "| gateways | routing | mean TTFT | p95 TTFT | tokens/s | cache hit rate | "
        "mean TTFT / round-robin's |"
    )
    print("|---|---|---|---|---|---|---|")
    for gateways in sorted({r.gateways for r in results}):
        runs = {r.mode: r for r in results if r.gateways == gateways}
        base = runs["weighted"].mean()
        for mode in [m for m in MODES if m in runs]:
            r = runs[mode]
            name = "weighted (round-robin)" if mode == "weighted" else mode
            print(
                f"| {gateways} | {name} | {r.mean():.3f} s | {r.p95():.3f} s | "
                f"{r.tokens_per_second():.1f} | {r.hit_rate():.1%} | "
                f"{r.mean() / base:.2f}x |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=16)
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--parallel", type=int, default=12, help="sequences per engine")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--n-ctx", type=int, default=1024, help="context of each sequence")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    model = json.dumps(
        [
            {
                "name": MODEL,
                "kind": "llamacpp",
                "path": bundled_gguf_path(),
                "n_ctx": args.n_ctx,
                "parallel": args.parallel,
                "n_threads": args.threads,
            }
        ]
    )
    results: list[Result] = []
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as tmp, cluster(Path(tmp)) as env:
        try:
            for name in ("engine-a", "engine-b"):
                start(
                    env,
                    procs,
                    Path(tmp),
                    "engine",
                    INFERD_MODELS=model,
                    INFERD_ENGINE_INSTANCE=name,
                )
            gateways = [start(env, procs, Path(tmp), "gateway") for _ in range(2)]
            for gateway in gateways:
                wait_replicas(gateway, 2)
            # two gateways: round-robin, then prefix (the order flipped, so drift evens out)
            for n, modes in (
                (1, ("prefix", "weighted", "least_busy")),
                (2, ("weighted", "prefix")),
            ):
                for mode in modes:
                    set_routing(gateways, mode)
                    run = f"{n}-{mode}-{uuid.uuid4().hex[:6]}"
                    print(f"{n} gateway(s), {mode}...", flush=True)
                    before = served(gateways)
                    result = asyncio.run(workload(gateways[:n], run, args))
                    after = served(gateways)
                    split = "/".join(str(after[k] - before.get(k, 0)) for k in sorted(after))
                    result.mode = mode
                    results.append(result)
                    by_turn = ", ".join(
                        f"{result.turn_hit_rate(k):.0%} {result.turn_ttft(k):.2f} s"
                        for k in range(args.turns)
                    )
                    print(
                        f"  mean TTFT {result.mean():.3f} s, hit rate "
                        f"{result.hit_rate():.1%} (by turn, hits and mean TTFT: {by_turn}), "
                        f"{result.seconds:.1f} s; requests per replica {split}",
                        flush=True,
                    )
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
    report(results, args)


if __name__ == "__main__":
    main()
