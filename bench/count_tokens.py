"""``/health`` while long prompts are tokenized: its latency alone, and while a client keeps
sending long ``POST /v1/messages/count_tokens`` requests (the bundled model's tokenizer and
chat template) and prompts of several megabytes (refused before tokenizing), one after the
other. Before the tokenizer ran in a worker thread, a 7 MB prompt held ``/health`` for seconds.

    .venv/bin/python bench/count_tokens.py [--seconds 20] [--chars 120000]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import httpx

import harness
from inferd.settings import bundled_gguf_path


def health_latencies(url: str, seconds: float) -> list[float]:
    out: list[float] = []
    deadline = time.monotonic() + seconds
    with httpx.Client(timeout=120) as client:
        while time.monotonic() < deadline:
            started = time.perf_counter()
            client.get(url + "/health").raise_for_status()
            out.append((time.perf_counter() - started) * 1000)
            time.sleep(0.05)
    return out


def counting(url: str, chars: int, stop: threading.Event, counts: dict[str, int]) -> None:
    long = {"model": "smollm2-135m-instruct",
            "messages": [{"role": "user", "content": "word " * (chars // 5)}]}
    huge = {"model": "smollm2-135m-instruct",
            "messages": [{"role": "user", "content": "x" * (7 * 1024 * 1024)}]}
    with httpx.Client(timeout=300) as client:
        while not stop.is_set():
            for body in (long, huge):
                response = client.post(url + "/v1/messages/count_tokens",
                                       content=json.dumps(body),
                                       headers={"content-type": "application/json"})
                counts[str(response.status_code)] = counts.get(str(response.status_code), 0) + 1


def report(name: str, values: list[float]) -> None:
    print(f"{name:<34} n={len(values):<5} p50={harness.pct(values, 50):8.1f} ms  "
          f"p99={harness.pct(values, 99):8.1f} ms  max={max(values):8.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--chars", type=int, default=120_000,
                        help="characters of the long prompts counted (within the bound)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, \
            harness.InferdServer(Path(tmp), "--no-bundled", env={
                "INFERD_MODELS": json.dumps([{
                    "name": "smollm2-135m-instruct", "kind": "llamacpp",
                    "path": bundled_gguf_path(),
                    "n_ctx": 2048, "parallel": 1}])}) as server:
        print(f"load: {harness.load_average()}")
        report("/health alone", health_latencies(server.url, args.seconds))
        stop, counts = threading.Event(), {}
        worker = threading.Thread(target=counting, args=(server.url, args.chars, stop, counts))
        worker.start()
        try:
            report("/health while counting", health_latencies(server.url, args.seconds))
        finally:
            stop.set()
            worker.join()
        print(f"count_tokens answers by status: {counts}")


if __name__ == "__main__":
    main()
