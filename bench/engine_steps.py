"""Where a batch step of the embedded engine spends its time, and what a gap in the ids costs.

In one process, on the bundled model:

- ``steps``: ``--n`` streamed greedy chats at once on ``LlamaCppEngine`` (``--tokens`` each),
  with timers around ``llama_decode``, the whole step, and the per-sequence Python work
  (sampling, detokenising, stop checks, handing the token to the event loop); prompt decodes
  are counted apart; the same with 1 chat, for the ratio;
- ``gaps``: decode steps on a bare llama.cpp context with one KV stream per sequence (as the
  engine makes it), for sequence sets with consecutive ids and with gaps, interleaved in rounds
  so that load on the machine hits every set alike.

    PYTHONPATH=src .venv/bin/python bench/engine_steps.py [--threads 1] [--n 8] [--tokens 64] \
        2>/dev/null    # llama.cpp's loading log
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import llama_cpp

from inferd.engines.llamacpp import LlamaCppEngine
from inferd.engines.llamacpp import batch as batch_module
from inferd.schemas.openai import ChatCompletionRequest
from inferd.settings import ModelSpec, bundled_gguf_path

TOPICS = ["a lighthouse keeper", "a lost robot", "a tired dragon", "a paper boat",
          "a mountain school", "a silent bell", "a red kite", "a clockmaker"]


class Timers:
    """Wraps the batch loop's decode, step and per-sequence sampling with counters."""

    def __init__(self) -> None:
        self.reset()
        real_decode = llama_cpp.llama_decode
        real_step = batch_module.BatchLoop._step
        real_sampled = batch_module.BatchLoop._sampled
        timers = self

        def decode(ctx: Any, batch: Any) -> int:
            started = time.perf_counter()
            status = int(real_decode(ctx, batch))
            spent = time.perf_counter() - started
            seqs = {batch.seq_id[i][0] for i in range(batch.n_tokens)}
            timers.counts["decodes"] += 1
            timers.times["decode"] += spent
            timers.counts["micro-batches"] += batch_module.runs(seqs)
            if len(seqs) == 1 and batch.n_tokens > 1:
                timers.counts["prompt decodes"] += 1
                timers.counts["prompt tokens"] += batch.n_tokens
                timers.times["prompt decode"] += spent
            return status

        def step(loop: Any) -> None:
            started = time.perf_counter()
            real_step(loop)
            timers.times["step"] += time.perf_counter() - started
            timers.counts["steps"] += 1

        def sampled(loop: Any, slot: Any, index: int) -> None:
            started = time.perf_counter()
            real_sampled(loop, slot, index)
            timers.times["per-sequence Python"] += time.perf_counter() - started

        # The batch module calls ``llama_cpp.llama_decode`` through the module attribute.
        llama_cpp.llama_decode = decode
        batch_module.BatchLoop._step = step  # type: ignore[method-assign]
        batch_module.BatchLoop._sampled = sampled  # type: ignore[method-assign]

    def reset(self) -> None:
        self.counts = dict.fromkeys(
            ["steps", "decodes", "micro-batches", "prompt decodes", "prompt tokens"], 0)
        self.times = dict.fromkeys(
            ["step", "decode", "prompt decode", "per-sequence Python"], 0.0)


async def stream(engine: LlamaCppEngine, i: int, tokens: int, started: float) -> float:
    request = ChatCompletionRequest.model_validate({
        "model": "smol", "temperature": 0, "max_tokens": tokens, "stream": True,
        "logit_bias": {"2": -100},  # the end of turn: every answer is ``tokens`` long
        "messages": [{"role": "user",
                      "content": f"Write a long story about {TOPICS[i % len(TOPICS)]}."}]})
    first = 0.0
    async for chunk in engine.chat_stream(request):
        choices = chunk.get("choices") or [{}]
        if not first and choices[0].get("delta", {}).get("content"):
            first = time.perf_counter() - started
    return first


async def steps(args: argparse.Namespace, timers: Timers) -> None:
    engine = LlamaCppEngine(ModelSpec(name="smol", path=bundled_gguf_path(), n_ctx=1024,
                                      n_threads=args.threads, parallel=8))
    await engine.start()
    try:
        await stream(engine, 0, 4, time.perf_counter())  # warm-up
        for n in (1, args.n):
            timers.reset()
            started = time.perf_counter()
            ttfts = await asyncio.gather(*[stream(engine, i, args.tokens, started)
                                           for i in range(n)])
            wall = time.perf_counter() - started
            c, t = timers.counts, timers.times
            python = t["step"] - t["decode"]
            gen_decodes = c["decodes"] - c["prompt decodes"]
            per_step = (t["decode"] - t["prompt decode"]) / max(1, gen_decodes)
            print(f"{n} concurrent: {n * args.tokens / wall:.1f} tok/s aggregate, mean TTFT "
                  f"{statistics.mean(ttfts):.2f} s, wall {wall:.2f} s\n"
                  f"  steps {c['steps']}, decodes {c['decodes']}, micro-batches "
                  f"{c['micro-batches']}; in llama_decode {t['decode']:.2f} s "
                  f"({100 * t['decode'] / t['step']:.0f}% of the steps), Python {python:.2f} s "
                  f"(per-sequence sampling/text/stops/delivery, timed apart: "
                  f"{t['per-sequence Python']:.2f} s)\n"
                  f"  generation decode {1000 * per_step:.1f}"
                  f" ms/step; prompts: {c['prompt decodes']} decodes of {c['prompt tokens']} "
                  f"tokens in {t['prompt decode']:.2f} s", flush=True)
    finally:
        await engine.close()


def gaps(args: argparse.Namespace) -> None:
    llama_cpp.llama_backend_init()
    model = llama_cpp.llama_model_load_from_file(bundled_gguf_path().encode(),
                                                 llama_cpp.llama_model_default_params())
    params = llama_cpp.llama_context_default_params()
    params.n_ctx = 1024 * 8
    params.n_batch = params.n_ubatch = 512
    params.n_seq_max = 8
    params.n_threads = params.n_threads_batch = args.threads
    params.kv_unified = False  # as the engine's context
    params.no_perf = True
    ctx = llama_cpp.llama_init_from_model(model, params)
    batch = llama_cpp.llama_batch_init(512, 0, 1)
    pos = [0] * 8

    def add(token: int, seq: int, logits: bool) -> None:
        i = batch.n_tokens
        batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = \
            token, pos[seq], 1, logits
        batch.seq_id[i][0] = seq
        batch.n_tokens = i + 1
        pos[seq] += 1

    for seq in range(8):  # a 30-token prompt on every sequence
        batch.n_tokens = 0
        for j in range(30):
            add(100 + j + seq, seq, j == 29)
        assert llama_cpp.llama_decode(ctx, batch) == 0

    sets = {"0": [0], "0-3": [0, 1, 2, 3], "0,2,4,6": [0, 2, 4, 6], "0-7": list(range(8)),
            "0-2,4-7": [0, 1, 2, 4, 5, 6, 7]}
    spent: dict[str, list[float]] = {name: [] for name in sets}
    for _ in range(args.rounds):
        for name, seqs in sets.items():
            started = time.perf_counter()
            for k in range(10):
                batch.n_tokens = 0
                for seq in seqs:
                    add(200 + k, seq, True)
                assert llama_cpp.llama_decode(ctx, batch) == 0
            spent[name].append((time.perf_counter() - started) / 10)
    base = statistics.median(spent["0"])
    for name, seqs in sets.items():
        step = statistics.median(spent[name])
        print(f"sequences {name:8} ({batch_module.runs(set(seqs))} micro-batches): "
              f"{1000 * step:6.1f} ms/step (median of {args.rounds}), {step / base:4.1f}x one "
              f"sequence, {len(seqs) / step:6.1f} tok/s")
    llama_cpp.llama_batch_free(batch)
    llama_cpp.llama_free(ctx)
    llama_cpp.llama_model_free(model)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    gaps(args)
    asyncio.run(steps(args, Timers()))


if __name__ == "__main__":
    main()
