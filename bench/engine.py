"""The embedded engine against llama.cpp's own server and raw llama-cpp-python, side by side.

One run on the bundled model, same threads, same parallel sequences, greedy decoding. Both
servers run for the whole bench and are measured in turns (the order flipped every round, raw
llama-cpp-python taking its turn at 1 request), ``--rounds`` times; each figure is the median
of its rounds, so load that comes and goes on a shared machine falls on both sides alike:

- concurrency table: 1, 2, 4, 8, 16 simultaneous streamed chats of ``--tokens`` tokens each;
  aggregate tokens/s, mean and p95 time to first token (TTFT), for inferd and llama-server;
- whether inferd's greedy answers in the 8-request batch equal the same prompts run alone;
- a 6-turn chat: TTFT of the last turn with and without the prompt cache (``cache_prompt``);
- 1 request: inferd tokens/s against llama-cpp-python's ``create_chat_completion`` in-process,
  both counted from the request to its last token (the prompt read whole in both).

llama-server: ``$LLAMA_SERVER``, ``llama-server`` on PATH, or a build from the llama.cpp sources
vendored in the llama-cpp-python sdist (``--build`` does it: pip download + cmake, a few minutes
on 2 cores, into ``~/.cache/inferd/llama-server``).

    .venv/bin/python bench/engine.py [--build] [--threads 2] [--parallel 8] [--tokens 128]
                                     [--levels 1 2 4 8 16] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from harness import InferdServer, Service, free_port, pct
from inferd.settings import bundled_gguf_path

MODEL = "smollm2-135m-instruct"
TOPICS = ["a lighthouse keeper", "a lost cat", "the first snow", "a robot gardener",
          "a river town", "an old violin", "a night train", "a desert well", "a glass city",
          "a tired dragon", "a paper boat", "a mountain school", "a silent bell", "a red kite",
          "a clockmaker", "a winter market"]
CACHE = Path.home() / ".cache" / "inferd" / "llama-server"
LLAMA_CPP_PYTHON = "0.3.16"


def prompt(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Write a long story about {TOPICS[i % len(TOPICS)]}."}]


# -- llama-server --------------------------------------------------------------------------
def find_llama_server(build: bool) -> str | None:
    for candidate in (os.environ.get("LLAMA_SERVER"), shutil.which("llama-server"),
                      str(CACHE / "bin" / "llama-server")):
        if candidate and Path(candidate).is_file():
            return candidate
    if not build:
        return None
    work = Path(tempfile.mkdtemp(prefix="llama-server-build-"))
    subprocess.run([sys.executable, "-m", "pip", "download",
                    f"llama-cpp-python=={LLAMA_CPP_PYTHON}", "--no-binary", "llama-cpp-python",
                    "--no-deps", "-d", str(work)], check=True)
    subprocess.run(["tar", "xzf", next(work.glob("*.tar.gz")), "-C", str(work)], check=True)
    unpacked = next(p for p in work.glob("llama_cpp_python-*") if p.is_dir())
    source = unpacked / "vendor" / "llama.cpp"
    subprocess.run(["cmake", "-B", "build", "-DLLAMA_BUILD_SERVER=ON", "-DLLAMA_CURL=OFF",
                    "-DBUILD_SHARED_LIBS=OFF", "-DCMAKE_BUILD_TYPE=Release"], cwd=source,
                   check=True)
    subprocess.run(["cmake", "--build", "build", "--target", "llama-server", "-j2"], cwd=source,
                   check=True)
    (CACHE / "bin").mkdir(parents=True, exist_ok=True)
    shutil.copy(source / "build" / "bin" / "llama-server", CACHE / "bin" / "llama-server")
    return str(CACHE / "bin" / "llama-server")


def wait_http(url: str, service: Service, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not service.alive():
            raise RuntimeError(f"{service.name} exited:\n{service.log_tail()}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{service.name} did not start:\n{service.log_tail()}")


# -- measurements --------------------------------------------------------------------------
async def stream_chat_details(client: httpx.AsyncClient, url: str,
                              messages: list[dict[str, str]], tokens: int, **extra: Any
                              ) -> tuple[float, str, dict[str, Any], dict[str, Any]]:
    """(TTFT seconds, text, usage, timings) of one streamed greedy chat (``timings``: what
    llama-server adds to its chunks, empty from inferd)."""
    body = {"model": MODEL, "messages": messages, "max_tokens": tokens, "temperature": 0,
            "stream": True, "stream_options": {"include_usage": True}, **extra}
    started = time.perf_counter()
    ttft, text, usage, timings = 0.0, [], {}, {}
    async with client.stream("POST", url + "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            for choice in chunk.get("choices") or []:
                piece = (choice.get("delta") or {}).get("content")
                if piece:
                    ttft = ttft or time.perf_counter() - started
                    text.append(piece)
            usage = chunk.get("usage") or usage
            timings = chunk.get("timings") or timings
    return ttft, "".join(text), usage, timings


async def stream_chat(client: httpx.AsyncClient, url: str, messages: list[dict[str, str]],
                      tokens: int, **extra: Any) -> tuple[float, int, str, int]:
    """(TTFT seconds, completion tokens, text, prompt tokens) of one streamed greedy chat."""
    ttft, text, usage, _ = await stream_chat_details(client, url, messages, tokens, **extra)
    return ttft, usage.get("completion_tokens", 0), text, usage.get("prompt_tokens", 0)


async def concurrent(url: str, n: int, tokens: int) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=900) as client:
        started = time.perf_counter()
        # No prompt cache here (llama-server caches by default): every prompt is read whole.
        results = await asyncio.gather(*(stream_chat(client, url, prompt(i), tokens,
                                                     cache_prompt=False)
                                         for i in range(n)))
        wall = time.perf_counter() - started
    ttfts = [r[0] for r in results]
    return {"tps": sum(r[1] for r in results) / wall, "mean": sum(ttfts) / n,
            "p95": pct(ttfts, 95), "texts": [r[2] for r in results],
            "prompt": sum(r[3] for r in results) / n}


async def lone(url: str, i: int, tokens: int) -> str:
    async with httpx.AsyncClient(timeout=900) as client:
        return (await stream_chat(client, url, prompt(i), tokens))[2]


async def multi_turn(url: str, cache: bool, turns: int = 6) -> float:
    """TTFT of the last turn of a chat whose earlier turns ran with the same cache setting."""
    messages: list[dict[str, str]] = [
        {"role": "system", "content": "You are a helpful assistant who answers in detail."}]
    ttft = 0.0
    async with httpx.AsyncClient(timeout=900) as client:
        for turn in range(turns):
            messages.append({"role": "user", "content": f"Tell me about {TOPICS[turn]}."})
            ttft, _, text, _ = await stream_chat(client, url, messages, 64, cache_prompt=cache)
            messages.append({"role": "assistant", "content": text})
    return ttft


def raw_model(threads: int) -> Any:
    from llama_cpp import Llama

    llama: Any = Llama(model_path=bundled_gguf_path(), n_ctx=2048, n_threads=threads,
                       n_threads_batch=threads, verbose=False)
    llama.create_chat_completion(messages=prompt(0), max_tokens=8, temperature=0)  # warm-up
    return llama


def raw_rate(llama: Any, tokens: int) -> float:
    """Tokens/s of one greedy chat in-process, from the call to its last token, the prompt
    read whole (``reset``: no prefix kept from the call before), end of text banned."""
    llama.reset()
    started = time.perf_counter()
    answer = llama.create_chat_completion(messages=prompt(0), max_tokens=tokens, temperature=0,
                                          logit_bias={llama.token_eos(): -100.0})
    return int(answer["usage"]["completion_tokens"]) / (time.perf_counter() - started)


def median_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of each figure over the rounds (texts and prompt size of the first)."""
    return {**rows[0], **{key: statistics.median(row[key] for row in rows)
                          for key in ("tps", "mean", "p95")}, "rounds": len(rows),
            "tps_rounds": [row["tps"] for row in rows]}


# -- the run -------------------------------------------------------------------------------
def measure(targets: dict[str, str], llama: Any, args: argparse.Namespace,
            ) -> tuple[dict[str, dict[int, dict[str, Any]]], float]:
    """Every level of every target, in turns, ``args.rounds`` times: the median rows and the
    median raw rate."""
    rows: dict[str, dict[int, list[dict[str, Any]]]] = {
        name: {n: [] for n in args.levels} for name in targets}
    raws: list[float] = []
    for url in targets.values():
        asyncio.run(concurrent(url, 1, 8))  # warm-up
    for r in range(args.rounds):
        order = list(targets) if r % 2 == 0 else list(reversed(targets))
        for n in args.levels:
            for name in order:
                row = asyncio.run(concurrent(targets[name], n, args.tokens))
                rows[name][n].append(row)
                print(f"  round {r + 1} {name:13} {n:3} concurrent: {row['tps']:7.1f} tok/s, "
                      f"TTFT mean {row['mean']:.2f} s p95 {row['p95']:.2f} s", flush=True)
            if n == 1:
                raws.append(raw_rate(llama, args.tokens))
                print(f"  round {r + 1} raw llama-cpp-python 1 request: {raws[-1]:7.1f} tok/s",
                      flush=True)
    table = {name: {n: median_row(found) for n, found in levels.items()}
             for name, levels in rows.items()}
    return table, statistics.median(raws) if raws else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--rounds", type=int, default=3,
                        help="times every level is measured on each side (medians reported)")
    parser.add_argument("--build", action="store_true",
                        help="build llama-server from the llama-cpp-python sdist if missing")
    args = parser.parse_args()
    server_bin = find_llama_server(args.build)
    turns: dict[str, dict[bool, float]] = {"inferd": {}, "llama-server": {}}
    n_ctx = 1024
    model = f"{MODEL}={bundled_gguf_path()},n_ctx={n_ctx},parallel={args.parallel}"
    with tempfile.TemporaryDirectory() as tmp, InferdServer(
            Path(tmp), "--no-bundled", "--model", model, "--threads", str(args.threads),
    ) as server:
        targets = {"inferd": server.url}
        service = None
        if server_bin is None:
            print("llama-server not found: set LLAMA_SERVER, put it on PATH, or pass --build "
                  "(builds it from the llama-cpp-python sdist)")
        else:
            port = free_port()
            service = Service("llama-server", [
                server_bin, "-m", bundled_gguf_path(), "--port", str(port), "-t",
                str(args.threads), "-tb", str(args.threads), "--parallel", str(args.parallel),
                "-c", str(n_ctx * args.parallel), "--alias", MODEL,
                # The model's own chat template, as inferd applies it: without --jinja
                # llama-server falls back to a built-in ChatML that drops SmolLM2's default
                # system prompt, and reads 18-token prompts where inferd reads 39.
                "--jinja"], port, Path(tmp))
            service.start()
        try:
            if service is not None:
                targets["llama-server"] = f"http://127.0.0.1:{port}"
                wait_http(targets["llama-server"], service)
            table, raw = measure(targets, raw_model(args.threads), args)
            together = table["inferd"].get(8, {}).get("texts", [])
            same = all(asyncio.run(lone(server.url, i, args.tokens)) == text
                       for i, text in enumerate(together))
            for name, url in targets.items():
                for cache in (False, True):
                    try:
                        turns[name][cache] = asyncio.run(multi_turn(url, cache))
                    except httpx.HTTPError as exc:  # reported, the rest of the run goes on
                        print(f"{name} 6-turn chat (cache {cache}) failed: {exc!r}")
                        break
        finally:
            if service is not None:
                service.stop()
    table.setdefault("llama-server", {})
    report(args, table, turns, raw, same)


def report(args: argparse.Namespace, table: dict[str, dict[int, dict[str, Any]]],
           turns: dict[str, dict[bool, float]], raw: float, same: bool) -> None:
    print(f"\n{args.tokens}-token greedy chats, {args.threads} threads, "
          f"{args.parallel} parallel sequences, medians of {args.rounds} rounds\n")
    print("| concurrent | inferd tok/s | TTFT mean | TTFT p95 | llama-server tok/s | "
          "TTFT mean | TTFT p95 |")
    print("|---|---|---|---|---|---|---|")
    for n in args.levels:
        a, b = table["inferd"][n], table["llama-server"].get(n)
        right = (f"{b['tps']:.1f} | {b['mean']:.2f} s | {b['p95']:.2f} s" if b
                 else "- | - | -")
        print(f"| {n} | {a['tps']:.1f} | {a['mean']:.2f} s | {a['p95']:.2f} s | {right} |")
    prompts = {name: rows[args.levels[0]]["prompt"] for name, rows in table.items()
               if args.levels[0] in rows}
    print("prompt tokens per request: " + ", ".join(f"{name} {value:.0f}"
                                                     for name, value in prompts.items()))
    if 8 in table["llama-server"] and 8 in table["inferd"]:
        a, b = table["inferd"][8], table["llama-server"][8]
        print(f"\n8 concurrent: aggregate tokens/s inferd/llama-server {a['tps'] / b['tps']:.2f}x"
              f", mean TTFT inferd/llama-server {a['mean'] / b['mean']:.2f}x")
        # the same round's turns side by side: what load came or went fell on both
        paired = [x / y for x, y in zip(a["tps_rounds"], b["tps_rounds"], strict=True)]
        print("8 concurrent, aggregate ratio of each round's turns: "
              + " ".join(f"{r:.2f}" for r in paired)
              + f"; median {statistics.median(paired):.2f}x, mean {statistics.mean(paired):.2f}x")
    print(f"greedy answers in the 8-request batch identical to lone runs: {same}")
    for name, values in turns.items():
        if len(values) == 2:
            print(f"6-turn chat, last-turn TTFT, {name}: without cache {values[False]:.3f} s, "
                  f"with cache {values[True]:.3f} s")
    one = table["inferd"][args.levels[0]]["tps"] if args.levels[0] == 1 else float("nan")
    print(f"1 request: inferd {one:.1f} tok/s, llama-cpp-python direct {raw:.1f} tok/s, "
          f"ratio {one / raw:.3f}")


if __name__ == "__main__":
    main()
