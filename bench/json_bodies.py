"""What the strict parse of stored and control-plane bodies would cost on the chat hot path.

    PYTHONPATH=src python bench/json_bodies.py [ROUNDS]

Times, for a small chat body (one message), a typical one (a system prompt, 8 turns, 2 tools)
and a large one (200 turns), the two ways inferd parses a body: the hot path
(``ChatCompletionRequest.model_validate_json``, straight from the bytes) and the strict one
(``inferd.json_bodies.parse_json`` with ``unique_keys``, then ``model_validate``), which stored
and control-plane bodies use. Prints microseconds per body (median of ROUNDS runs, default 7)
and the ratio.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable

import orjson

from inferd.json_bodies import parse_json
from inferd.schemas.openai import ChatCompletionRequest

TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "required": ["city"], "properties": {
        "city": {"type": "string", "description": "City name"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}}}}


def body(turns: int, tools: int) -> bytes:
    messages = [{"role": "system", "content": "You are a helpful assistant. " * 10}]
    for i in range(turns):
        messages.append({"role": "user", "content": f"Question {i}: " + "words " * 40})
        messages.append({"role": "assistant", "content": f"Answer {i}: " + "words " * 60})
    messages.append({"role": "user", "content": "And now?"})
    return orjson.dumps({"model": "smollm2-135m-instruct", "messages": messages,
                         "temperature": 0.7, "max_tokens": 128, "tools": [TOOL] * tools})


def per_body(parse: Callable[[bytes], object], raw: bytes, rounds: int) -> float:
    """Median microseconds per parse over ``rounds`` runs of enough parses to last ~50 ms."""
    count = 1
    while True:
        start = time.perf_counter()
        for _ in range(count):
            parse(raw)
        if time.perf_counter() - start > 0.05:
            break
        count *= 2
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(count):
            parse(raw)
        samples.append((time.perf_counter() - start) / count * 1e6)
    return statistics.median(samples)


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    bodies = {"small (1 message)": body(0, 0), "typical (8 turns, 2 tools)": body(8, 2),
              "large (200 turns)": body(200, 0)}
    print(f"{'body':28} {'bytes':>8} {'hot path us':>12} {'strict us':>10} {'ratio':>6}")
    for name, raw in bodies.items():
        hot = per_body(ChatCompletionRequest.model_validate_json, raw, rounds)
        strict = per_body(lambda r: ChatCompletionRequest.model_validate(
            parse_json(r, unique_keys=True)), raw, rounds)
        print(f"{name:28} {len(raw):>8} {hot:>12.1f} {strict:>10.1f} {strict / hot:>6.2f}")


if __name__ == "__main__":
    main()
