"""The prompt cache with conversations taking turns: inferd against llama.cpp's own server.

``--conversations`` chats (no more than the ``--parallel`` sequences) take turns, one request
at a time, for ``--turns`` turns: conversation 0's turn 1, conversation 1's turn 1, ...,
conversation 0's turn 2, ... Each has a system prompt of its own (``--common-system``: one for
all, so conversations share a long prefix). Both servers run the whole time on the bundled
model with the same threads and sequences and are asked in turns (the order flipped every
request), each keeping its own conversations (their answers may differ). Greedy answers of
``--tokens`` tokens; the prompt cache as each server has it by default.

For each returning turn: the cached tokens the server reports (inferd
``usage.prompt_tokens_details.cached_tokens``; llama-server the same field, else
``timings.cache_n``, else the prompt less ``timings.prompt_n``) against what the turn could
reuse at most (its conversation's previous prompt and answer, short of the new prompt's last
token, which is always read), and the time to the first token (TTFT).

    .venv/bin/python bench/prompt_cache.py [--build] [--threads 1] [--parallel 8]
        [--conversations 8] [--turns 4] [--tokens 48] [--common-system] [--no-repack]
        [--pause 0]

``--no-repack`` starts llama-server without its extra weight buffers (its AMX kernels among
them).

Run of 2026-12-07 on the 2-core development machine (a CPU with AMX; load average 2-6), the
defaults (8 conversations, 4 turns, 48-token answers, prompts of 263 to 462 tokens, 1 thread):

| target | returning turns | cached / reusable: min | TTFT returning: median | TTFT first turn |
|---|---|---|---|---|
| inferd | 24 | 99.7% | 0.081 s | 0.500 s |
| llama-server | 24 | 99.6% | 0.051 s | 0.426 s |

On a CPU without AMX (2026-12-07 evening, load average 4.7-8.9), two runs: returning-turn TTFT
inferd / llama-server 1.05x and 1.03x (ratio of the medians), 1.18x and 1.09x (median of the
paired ratios; the second run with ``--pause 1``); docs/performance/engine.md has the table.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from engine import MODEL, TOPICS, find_llama_server, stream_chat_details, wait_http
from harness import InferdServer, Service, free_port, load_average
from inferd.settings import bundled_gguf_path

BRIEF = ("Speak plainly, keep to the facts you are sure of, say so when you do not know, and "
         "never invent names, dates or numbers. Answer in a few sentences unless asked for "
         "more, give one example where it helps, and end with a short question that keeps the "
         "conversation going. ")
QUESTIONS = ["What is it known for?", "Tell me more about its history.",
             "What would a visitor notice first?", "What is a common mistake about it?",
             "Summarise what we said so far.", "What should I read next about it?"]


def system_prompt(i: int, common: bool) -> str:
    """About 300 tokens; of its own per conversation unless ``common``."""
    subject = "everything a visitor asks" if common else TOPICS[i % len(TOPICS)]
    return f"You are a patient guide to {subject}. " + BRIEF * 4


@dataclass
class Turn:
    target: str
    conversation: int
    turn: int
    prompt: int
    completion: int
    cached: int
    reusable: int | None  # None on a first turn
    ttft: float


@dataclass
class Conversation:
    messages: list[dict[str, str]]
    last: tuple[int, int] | None = None  # the previous turn's prompt and completion tokens
    turns: list[Turn] = field(default_factory=list)


def cached_of(usage: dict[str, Any], timings: dict[str, Any]) -> int:
    details = usage.get("prompt_tokens_details") or {}
    if details.get("cached_tokens") is not None:
        return int(details["cached_tokens"])
    if timings.get("cache_n") is not None:
        return int(timings["cache_n"])
    return int(usage.get("prompt_tokens", 0)) - int(timings.get("prompt_n", 0))


async def ask(client: httpx.AsyncClient, url: str, messages: list[dict[str, str]],
              tokens: int) -> tuple[float, str, dict[str, Any], dict[str, Any]]:
    """(TTFT, text, usage, timings) of one streamed greedy chat."""
    return await stream_chat_details(client, url, messages, tokens)


async def run(targets: dict[str, str], args: argparse.Namespace,
              ) -> dict[str, list[Conversation]]:
    talks = {name: [Conversation([{"role": "system",
                                   "content": system_prompt(i, args.common_system)}])
                    for i in range(args.conversations)] for name in targets}
    # A connection per request: a kept-alive one the server closes as it is reused fails.
    async with httpx.AsyncClient(timeout=900, limits=httpx.Limits(
            max_keepalive_connections=0)) as client:
        for url in targets.values():  # warm-up, a prompt no conversation starts with
            await ask(client, url, [{"role": "user", "content": "Hello."}], 4)
        flip = False
        for turn in range(args.turns):
            for i in range(args.conversations):
                order = list(targets) if not flip else list(reversed(targets))
                flip = not flip
                for name in order:
                    talk = talks[name][i]
                    talk.messages.append({"role": "user", "content":
                                          QUESTIONS[turn % len(QUESTIONS)]})
                    try:
                        ttft, text, usage, timings = await ask(client, targets[name],
                                                               talk.messages, args.tokens)
                    except httpx.HTTPError as exc:
                        raise RuntimeError(f"{name}, turn {turn + 1} of conversation {i}: "
                                           f"{exc!r}") from exc
                    prompt, completion = usage["prompt_tokens"], usage["completion_tokens"]
                    reusable = (None if talk.last is None
                                else min(sum(talk.last), prompt - 1))
                    row = Turn(name, i, turn, prompt, completion, cached_of(usage, timings),
                               reusable, ttft)
                    talk.turns.append(row)
                    talk.last = (prompt, completion)
                    talk.messages.append({"role": "assistant", "content": text})
                    # a person reads the answer before the next turn; the server that answered
                    # finishes what it does after an answer before the other one is timed
                    await asyncio.sleep(args.pause)
                    share = (f"{row.cached}/{reusable} ({row.cached / reusable:.0%})"
                             if reusable else f"{row.cached} (first turn)")
                    print(f"  turn {turn + 1} conversation {i} {name:12} prompt {prompt:4} "
                          f"cached {share:18} TTFT {ttft:.3f} s", flush=True)
    return talks


def report(talks: dict[str, list[Conversation]], args: argparse.Namespace) -> None:
    rows = {name: [t for c in convs for t in c.turns] for name, convs in talks.items()}
    systems = "one system prompt for all" if args.common_system else "a system prompt each"
    print(f"\n{args.conversations} conversations taking turns, {args.turns} turns, "
          f"{args.tokens}-token greedy answers, {args.threads} thread(s), {args.parallel} "
          f"sequences; {systems}; load average {load_average()}\n")
    print("| target | returning turns | cached / reusable: min | median | total | "
          "TTFT returning: median | mean | TTFT first turn: median |")
    print("|---|---|---|---|---|---|---|---|")
    medians: dict[str, float] = {}
    for name, found in rows.items():
        back = [t for t in found if t.reusable]
        first = [t for t in found if t.reusable is None]
        if not back:
            continue
        shares = [t.cached / t.reusable for t in back if t.reusable]
        total = sum(t.cached for t in back) / sum(t.reusable or 0 for t in back)
        medians[name] = statistics.median(t.ttft for t in back)
        print(f"| {name} | {len(back)} | {min(shares):.1%} | {statistics.median(shares):.1%} | "
              f"{total:.1%} | {medians[name]:.3f} s | "
              f"{statistics.mean(t.ttft for t in back):.3f} s | "
              f"{statistics.median(t.ttft for t in first):.3f} s |")
    if "inferd" in rows and "llama-server" in rows:
        pairs = [a.ttft / b.ttft for a, b in zip(
            [t for t in rows["inferd"] if t.reusable],
            [t for t in rows["llama-server"] if t.reusable], strict=True)]
        print(f"\nreturning-turn TTFT inferd/llama-server: ratio of medians "
              f"{medians['inferd'] / medians['llama-server']:.2f}x, median of paired ratios "
              f"{statistics.median(pairs):.2f}x")
    back = [t for t in rows.get("inferd", []) if t.reusable]
    if back:
        worst = min(t.cached / (t.reusable or 1) for t in back)
        print(f"inferd: every returning turn cached >= 95% of what it could reuse: "
              f"{worst >= 0.95} (lowest {worst:.1%})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--conversations", type=int, default=8)
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--n-ctx", type=int, default=2048, help="context of each sequence")
    parser.add_argument("--pause", type=float, default=0.0,
                        help="seconds between two requests (0: the next one at once)")
    parser.add_argument("--common-system", action="store_true",
                        help="one system prompt for every conversation")
    parser.add_argument("--no-repack", action="store_true",
                        help="llama-server without extra weight buffers (AMX kernels)")
    parser.add_argument("--build", action="store_true",
                        help="build llama-server from the llama-cpp-python sdist if missing")
    args = parser.parse_args()
    if args.conversations > args.parallel:
        parser.error("--conversations must not exceed --parallel (each keeps a sequence)")
    server_bin = find_llama_server(args.build)
    model = (f"{MODEL}={bundled_gguf_path()},n_ctx={args.n_ctx},parallel={args.parallel},"
             f"threads={args.threads}")
    with tempfile.TemporaryDirectory() as tmp, InferdServer(
            Path(tmp), "--no-bundled", "--model", model) as server:
        targets = {"inferd": server.url}
        service = None
        if server_bin is None:
            print("llama-server not found: set LLAMA_SERVER, put it on PATH, or pass --build")
        else:
            port = free_port()
            service = Service("llama-server", [
                server_bin, "-m", bundled_gguf_path(), "--port", str(port), "-t",
                str(args.threads), "-tb", str(args.threads), "--parallel", str(args.parallel),
                "-c", str(args.n_ctx * args.parallel), "--alias", MODEL, "--jinja",
                *(["--no-repack"] if args.no_repack else [])], port, Path(tmp))
            service.start()
        try:
            if service is not None:
                targets["llama-server"] = f"http://127.0.0.1:{port}"
                wait_http(targets["llama-server"], service)
            talks = asyncio.run(run(targets, args))
        except RuntimeError:
            if service is not None:
                print(f"llama-server alive: {service.alive()}; its log ends:\n"
                      f"{service.log_tail(40)}")
            raise
        finally:
            if service is not None:
                service.stop()
    report(talks, args)


if __name__ == "__main__":
    main()
