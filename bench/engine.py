"""Generation speed of the bundled model: through inferd's API vs llama-cpp-python directly.

Runs both in one process tree, interleaved over several rounds, with the same prompt, the same
number of threads and greedy decoding (so both produce the same tokens), and prints tokens/s for
each and the ratio. The end-of-turn token is banned so every run generates exactly
``--tokens`` tokens.

    .venv/bin/python bench/engine.py [--rounds 5] [--tokens 256] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from harness import InferdServer
from inferd.settings import bundled_gguf_path

MODEL = "smollm2-135m-instruct"
MESSAGES = [{"role": "user", "content": "Write a long story about a lighthouse keeper."}]


def via_server(url: str, tokens: int, ban: dict[str, float]) -> tuple[int, float]:
    body = {"model": MODEL, "messages": MESSAGES, "max_tokens": tokens, "temperature": 0,
            "logit_bias": ban}
    started = time.perf_counter()
    answer = httpx.post(url + "/v1/chat/completions", json=body, timeout=600).json()
    elapsed = time.perf_counter() - started
    return answer["usage"]["completion_tokens"], elapsed


def direct(llama: object, tokens: int, ban: dict[int, float]) -> tuple[int, float]:
    started = time.perf_counter()
    answer = llama.create_chat_completion(  # type: ignore[attr-defined]
        messages=MESSAGES, max_tokens=tokens, temperature=0, logit_bias=ban)
    elapsed = time.perf_counter() - started
    return int(answer["usage"]["completion_tokens"]), elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    from llama_cpp import Llama

    llama = Llama(model_path=bundled_gguf_path(), n_ctx=2048, n_threads=args.threads,
                  n_threads_batch=args.threads, verbose=False)
    eos = llama.token_eos()
    with tempfile.TemporaryDirectory() as tmp, \
            InferdServer(Path(tmp), "--threads", str(args.threads)) as server:
        via_server(server.url, 8, {str(eos): -100.0})  # warm-up
        direct(llama, 8, {eos: -100.0})
        rates: dict[str, list[float]] = {"inferd /v1/chat/completions": [],
                                         "llama-cpp-python direct": []}
        for _ in range(args.rounds):
            n, t = via_server(server.url, args.tokens, {str(eos): -100.0})
            rates["inferd /v1/chat/completions"].append(n / t)
            n, t = direct(llama, args.tokens, {eos: -100.0})
            rates["llama-cpp-python direct"].append(n / t)
    print(f"{'path':32} {'tokens/s (median)':>18} {'min':>8} {'max':>8}")
    for name, values in rates.items():
        print(f"{name:32} {statistics.median(values):18.1f} {min(values):8.1f} "
              f"{max(values):8.1f}")
    server_rate = statistics.median(rates["inferd /v1/chat/completions"])
    direct_rate = statistics.median(rates["llama-cpp-python direct"])
    print(f"ratio inferd/direct: {server_rate / direct_rate:.3f} "
          f"(loss {100 * (1 - server_rate / direct_rate):.1f}%; {args.rounds} rounds of "
          f"{args.tokens} tokens, {args.threads} threads)")


if __name__ == "__main__":
    main()
