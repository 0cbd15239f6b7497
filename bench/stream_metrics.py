"""What the streaming token timings (time to first token at the first generated chunk, the
inter-token latency histogram) cost per streamed chunk.

    .venv/bin/python bench/stream_metrics.py [ROUNDS]

Side by side in one process, in interleaved rounds (median of ROUNDS, default 7):

- ``without``: the stream accounting as it was before the token timings (counting the pieces
  sent; the time to first token taken when the stream opens);
- ``with``: ``Inference`` as it is (a clock read per chunk of text, one histogram observation
  per gap between two).

Two measures: the accounting wrapper alone over a prepared stream of chunks (nanoseconds per
chunk), and whole streamed chats through ``Inference.chat_stream`` on the echo engine (chunks
per second, with the engine and the chunk building that every stream pays, but no HTTP: the
worst case). Both in CPU time of the process (``time.process_time``), so that other processes
on a shared machine weigh less on the figures. Prints both and the ratios.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

from inferd.auth.principal import OPEN_MODE
from inferd.engines.base import Chunk
from inferd.engines.echo import EchoEngine
from inferd.engines.streams import primed
from inferd.inference import Inference, partial_usage, pieces
from inferd.metering import Call, Metering
from inferd.routing.router import Replica, Router
from inferd.schemas.openai import ChatCompletionRequest
from inferd.settings import ModelSpec
from inferd.usage import UsageRecord, UsageRecorder

WORDS = 256  # chunks of text per stream
STREAMS = 200  # streams per round


class Before(Inference):
    """The stream accounting without the token timings."""

    async def _metered(
        self, call: Call, stream: AsyncIterator[Chunk], prompt_estimate: int
    ) -> AsyncIterator[Chunk]:
        usage: dict[str, Any] | None = None
        sent = 0
        try:
            async for chunk in stream:
                if chunk.get("usage"):
                    usage = chunk["usage"]
                sent += pieces(chunk)
                yield chunk
        except BaseException as exc:
            self._failed(call, exc, usage or partial_usage(prompt_estimate, sent))
            raise
        else:
            self._done(call, usage)
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()

    async def _started(self, call: Call, start: Any, prompt_estimate: int) -> Any:
        try:
            stream = await start
        except BaseException as exc:
            self._failed(call, exc)
            raise
        call.ttft = time.perf_counter()
        return await primed(self._metered(call, stream, prompt_estimate))


async def _discard(records: list[UsageRecord]) -> None:
    return None


def build(kind: type[Inference]) -> Inference:
    router = Router()
    router.add(
        Replica(
            id="local:echo", model="echo", engine=EchoEngine(ModelSpec(name="echo", kind="echo"))
        )
    )
    metering = Metering(None, UsageRecorder(_discard, flush_seconds=3600))  # type: ignore[arg-type]
    return kind(router, metering)


CHUNKS: list[Chunk] = [
    {
        "id": "c",
        "object": "chat.completion.chunk",
        "model": "echo",
        "choices": [{"index": 0, "delta": {"content": f" w{i}"}, "finish_reason": None}],
    }
    for i in range(WORDS)
]


async def _prepared() -> AsyncIterator[Chunk]:
    for chunk in CHUNKS:
        yield chunk


async def wrapper_ns(inference: Inference) -> float:
    """Nanoseconds per chunk of ``_metered`` over a prepared stream."""
    start = time.process_time_ns()
    for _ in range(STREAMS):
        call = Call("chat", "echo", OPEN_MODE, True)
        async for _chunk in inference._metered(call, _prepared(), 0):
            pass
    return (time.process_time_ns() - start) / (STREAMS * WORDS)


REQUEST = ChatCompletionRequest.model_validate(
    {
        "model": "echo",
        "stream": True,
        "messages": [{"role": "user", "content": " ".join(f"w{i}" for i in range(WORDS))}],
    }
)


async def chats_chunks_per_s(inference: Inference) -> float:
    start = time.process_time()
    chunks = 0
    for _ in range(STREAMS // 4):
        async for _chunk in await inference.chat_stream(REQUEST, OPEN_MODE):
            chunks += 1
    return chunks / (time.process_time() - start)


async def main(rounds: int) -> None:
    variants = {"without": build(Before), "with": build(Inference)}
    wrapper: dict[str, list[float]] = {name: [] for name in variants}
    chats: dict[str, list[float]] = {name: [] for name in variants}
    for inference in variants.values():  # warm up
        await wrapper_ns(inference)
        await chats_chunks_per_s(inference)
    for _ in range(rounds):
        for name, inference in variants.items():
            wrapper[name].append(await wrapper_ns(inference))
            chats[name].append(await chats_chunks_per_s(inference))
    w = {name: statistics.median(v) for name, v in wrapper.items()}
    c = {name: statistics.median(v) for name, v in chats.items()}
    print(f"Streams of {WORDS} chunks of text, median of {rounds} interleaved rounds:\n")
    print("| token timings | accounting wrapper, ns/chunk | chat_stream on echo, chunks/s |")
    print("|---|---|---|")
    for name in variants:
        print(f"| {name} | {w[name]:,.0f} | {c[name]:,.0f} |")
    print(
        f"\nwrapper: with / without = {w['with'] / w['without']:.2f}x time per chunk "
        f"(+{w['with'] - w['without']:,.0f} ns)"
    )
    print(f"chat_stream: with / without = {c['with'] / c['without']:.3f}x chunks/s")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 7))
