"""Shared shape of the in-process text engines (llama.cpp and echo).

A concrete engine turns a request into a ``Generation`` (the prompt, token counts, sampling
parameters) and yields text pieces for it; this base class builds every OpenAI answer from that:
chat and text completions, streamed or not, with usage.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Protocol, Self

from opentelemetry.context import Context, get_current

from inferd.engines.base import Chunk, Engine, LogprobEntry
from inferd.engines.toolparse import ToolStream, with_tool_calls
from inferd.engines.tools import ToolPlan
from inferd.errors import UnsupportedParameter
from inferd.ids import new_id
from inferd.schemas.answers import (
    ChatChoice,
    ChatCompletion,
    ChatMessageOut,
    ChoiceLogprobs,
    CompletionChoice,
    CompletionLogprobs,
    PromptTokensDetails,
    TextCompletion,
    TokenLogprob,
    Usage,
)
from inferd.schemas.openai import (
    ChatCompletionRequest,
    CompletionRequest,
    Prompt,
    TokenIds,
    chat_chunk,
    message_chars,
    usage_chunk,
)
from inferd.tracing import Tracer, current_tracer, failed

# Requests whose text is longer than this many characters are tokenized (with their template
# applied) in a worker thread, so that a long prompt never holds the event loop; shorter ones
# cost microseconds and are prepared inline.
INLINE_PREPARE_CHARS = 8192

# Fields a local engine may ignore without changing the answer a client gets.
IGNORABLE_FIELDS = frozenset({"user", "metadata", "store", "service_tier", "parallel_tool_calls",
                              "prompt_cache_key", "safety_identifier", "stream", "model",
                              "session_id",
                              "stream_options", "messages", "prompt"})


class Sampler(Protocol):
    """An engine's own sampler settings (llama.cpp's ``SamplingParams``)."""

    @property
    def seed(self) -> int | None: ...

    def seeded(self, seed: int | None) -> Self:
        """The same settings with another seed (each choice of ``n`` has its own)."""
        ...


@dataclass
class GenerationParams:
    """How a generation runs: its limits, its stops and what it reports besides text."""

    max_tokens: int | None
    stop: list[str]
    sampling: Sampler | None = None  # the engine's own (None: it samples as it likes)
    logprobs: int | None = None  # None: no logprobs; else how many alternatives per token
    echo: str | None = None  # ``echo: true``: the prompt's text, sent before the answer
    cache_prompt: bool = True  # whether the engine may reuse a cached prefix of the prompt


@dataclass
class Generation:
    """One run of the model: its input and, once finished, its outcome."""

    prompt: str | TokenIds  # text, or token ids of the model's tokenizer
    prompt_tokens: int
    params: GenerationParams
    completion_tokens: int = 0
    finish_reason: str | None = None
    # the logprob entries of the tokens generated so far (with ``params.logprobs``)
    logprobs: list[LogprobEntry] = field(default_factory=list)
    cached_tokens: int = 0  # prompt tokens found in the engine's prompt cache
    tools: ToolPlan | None = None  # the functions it may call (a chat with tools)
    choice: int = 0  # its index among the ``n`` choices of one prompt
    first: Generation | None = None  # the first choice of its prompt (for choice > 0)
    text_offset: int = 0  # characters of text already reported (the legacy logprobs)


class LocalTextEngine(Engine):
    """Builds OpenAI answers from an engine's ``generate`` stream of text pieces.

    ``n`` choices are separate generations run at once (a batching engine decodes them
    together, and may read their shared prompt once: ``choice_of`` links each to the first);
    with a ``seed``, choice ``i`` uses ``seed + i`` so the choices differ yet repeat.
    An engine that reports logprobs appends OpenAI ``ChatCompletionTokenLogprob`` entries to
    ``generation.logprobs`` before yielding the piece they belong to.
    """

    capabilities = frozenset({"chat", "completions"})
    # Extra (non-OpenAI) sampling fields this engine honours.
    extra_fields: frozenset[str] = frozenset()
    # Largest ``n`` this engine accepts.
    max_choices = 1

    # -- to implement ---------------------------------------------------------------------
    def prepare_chat(self, request: ChatCompletionRequest) -> Generation:
        raise NotImplementedError

    async def prepared_chat(self, request: ChatCompletionRequest) -> Generation:
        """``prepare_chat`` (off the event loop when the request is long), for an engine to
        override that does more of it off the loop (a grammar built from a schema)."""
        return await self.prepare_chat_off_loop(request)

    def prepare_text(self, request: CompletionRequest, prompt: Prompt) -> Generation:
        """``prompt`` is text, or token ids of this model's tokenizer."""
        raise NotImplementedError

    def generate(self, generation: Generation, stream: bool = True) -> AsyncIterator[str]:
        """Yield text pieces; set ``completion_tokens`` and ``finish_reason`` when done.

        ``stream=False`` tells the engine nobody reads the pieces before the end, so it may
        hand the text over in one piece.
        """
        raise NotImplementedError

    async def prepare_chat_off_loop(self, request: ChatCompletionRequest) -> Generation:
        """``prepare_chat``, in a worker thread when the request is long (see
        ``INLINE_PREPARE_CHARS``)."""
        if chat_chars(request) <= INLINE_PREPARE_CHARS:
            return self.prepare_chat(request)
        return await asyncio.to_thread(self.prepare_chat, request)

    async def prepare_text_off_loop(self, request: CompletionRequest,
                                    prompt: Prompt) -> Generation:
        """``prepare_text``, in a worker thread when the prompt is long."""
        if len(prompt) <= INLINE_PREPARE_CHARS:
            return self.prepare_text(request, prompt)
        return await asyncio.to_thread(self.prepare_text, request, prompt)

    # -- validation -----------------------------------------------------------------------
    def check_fields(self, request: ChatCompletionRequest | CompletionRequest) -> None:
        """Refuse, by name, any parameter this engine cannot honour."""
        if (request.n or 1) > self.max_choices:
            most = "only n=1" if self.max_choices == 1 else f"n up to {self.max_choices}"
            raise UnsupportedParameter(f"The model '{self.name}' supports {most}.", param="n")
        extras = set(request.model_extra or {}) - IGNORABLE_FIELDS - self.extra_fields
        if extras:
            name = sorted(extras)[0]
            raise UnsupportedParameter(
                f"Unrecognized request argument supplied: {name}", param=name)

    def _choices(self, first: Generation, n: int | None) -> list[Generation]:
        out = [first]
        for index in range(1, n or 1):
            out.append(choice_of(first, index))
        return out

    async def _run(self, generations: list[Generation]) -> list[str]:
        texts = [""] * len(generations)
        async for index, piece, _ in self.traced(generations, stream=False):
            texts[index] += piece or ""
        return texts

    async def merged(self, generations: list[Generation], stream: bool = True,
                     ) -> AsyncIterator[tuple[int, str | None, list[LogprobEntry]]]:
        """Pieces of all generations as they come: (choice, text, logprob entries); text None
        = that choice ended.

        Several generations run at once so a batching engine decodes them in the same steps;
        an engine that can share the work of choices of one prompt overrides this.
        """
        if len(generations) == 1:
            seen = 0
            async for piece in self.generate(generations[0], stream):
                entries = generations[0].logprobs
                yield 0, piece, entries[seen:]
                seen = len(entries)
            yield 0, None, []
            return
        queue: asyncio.Queue[tuple[int, str | Exception | None, list[LogprobEntry]]] = (
            asyncio.Queue())

        async def pump(index: int, generation: Generation) -> None:
            seen = 0
            try:
                async for piece in self.generate(generation, stream):
                    entries = generation.logprobs
                    queue.put_nowait((index, piece, entries[seen:]))
                    seen = len(entries)
                queue.put_nowait((index, None, []))
            except Exception as exc:  # re-raised by the reader
                queue.put_nowait((index, exc, []))

        tasks = [asyncio.create_task(pump(i, g)) for i, g in enumerate(generations)]
        try:
            done = 0
            while done < len(tasks):
                index, item, entries = await queue.get()
                if isinstance(item, Exception):
                    raise item
                done += item is None
                yield index, item, entries
        finally:
            for task in tasks:
                task.cancel()

    def traced(self, generations: list[Generation], stream: bool = True,
               ) -> AsyncIterator[tuple[int, str | None, list[LogprobEntry]]]:
        """``merged``, in a ``generate {model}`` span when the request is traced: the child
        of the span current now (a stream's later steps run in its reader's context)."""
        tracer = current_tracer()
        if tracer is None:
            return self.merged(generations, stream)
        return self._traced(tracer, get_current(), generations, stream)

    async def _traced(self, tracer: Tracer, parent: Context, generations: list[Generation],
                      stream: bool) -> AsyncIterator[tuple[int, str | None, list[LogprobEntry]]]:
        span = tracer.start_span(f"generate {self.name}", context=parent, attributes={
            "gen_ai.system": self.kind, "gen_ai.request.model": self.name,
            "gen_ai.usage.input_tokens": _prompt_total(generations),
            "inferd.choices": len(generations)})
        first = stream  # unstreamed, an engine may hand over the text at the end
        try:
            async for item in self.merged(generations, stream):
                if first and item[1]:
                    first = False  # the wait for a seat and the prompt's reading are over
                    span.add_event("first_token")
                yield item
        except BaseException as exc:
            failed(span, exc)
            raise
        finally:
            span.set_attribute("gen_ai.usage.output_tokens",
                               sum(g.completion_tokens for g in generations))
            span.set_attribute("inferd.cached_tokens", sum(g.cached_tokens for g in generations))
            reasons = [g.finish_reason for g in generations if g.finish_reason]
            if reasons:
                span.set_attribute("gen_ai.response.finish_reasons", reasons)
            span.end()

    # -- chat -----------------------------------------------------------------------------
    async def chat(self, request: ChatCompletionRequest) -> ChatCompletion:
        generations = self._choices(await self.prepared_chat(request), request.n)
        texts = await self._run(generations)
        choices = []
        for index, (g, text) in enumerate(zip(generations, texts, strict=True)):
            choice = ChatChoice(
                index=index,
                message=ChatMessageOut(role="assistant", content=text, refusal=None),
                logprobs=_chat_logprobs(g, g.logprobs),
                finish_reason=g.finish_reason or "stop")
            names = _names(g)
            if names is not None:
                with_tool_calls(choice, text, names)
            choices.append(choice)
        return ChatCompletion(
            id=new_id("chatcmpl", "-"), object="chat.completion", created=int(time.time()),
            model=request.model, choices=choices,
            usage=_usage(generations[0].prompt_tokens,
                         sum(g.completion_tokens for g in generations), generations))

    async def chat_stream(self, request: ChatCompletionRequest) -> AsyncIterator[Chunk]:
        generations = self._choices(await self.prepared_chat(request), request.n)
        cid, created, model = new_id("chatcmpl", "-"), int(time.time()), request.model
        # with tools, each choice's text goes through a parser that emits tool-call deltas
        calls = [None if (names := _names(g)) is None else ToolStream(names)
                 for g in generations]
        pieces = self.traced(generations)  # before the first yield: in the attempt's context
        for index in range(len(generations)):
            yield _indexed(chat_chunk(id=cid, model=model, created=created,
                                      delta={"role": "assistant", "content": ""}), index)
        async for index, piece, entries in pieces:
            generation, parser = generations[index], calls[index]
            if piece is None:
                for delta in parser.finish() if parser else []:
                    yield _indexed(chat_chunk(id=cid, model=model, created=created,
                                              delta=delta), index)
                finish = generation.finish_reason or "stop"
                if parser and parser.called and finish == "stop":
                    finish = "tool_calls"
                yield _indexed(chat_chunk(id=cid, model=model, created=created, delta={},
                                          finish_reason=finish), index)
            elif parser is not None:
                for delta in parser.feed(piece):
                    yield _indexed(chat_chunk(id=cid, model=model, created=created,
                                              delta=delta), index)
            elif piece or entries:
                chunk = chat_chunk(id=cid, model=model, created=created,
                                   delta={"content": piece})
                logprobs = _chat_logprobs(generation, entries)
                chunk["choices"][0]["logprobs"] = None if logprobs is None else logprobs.wire()
                yield _indexed(chunk, index)
        last = usage_chunk(id=cid, model=model, created=created, obj="chat.completion.chunk",
                           prompt_tokens=generations[0].prompt_tokens,
                           completion_tokens=sum(g.completion_tokens for g in generations),
                           cached_tokens=_cached(generations))
        yield last

    # -- text completions -----------------------------------------------------------------
    async def _text_generations(self, request: CompletionRequest) -> list[Generation]:
        return [g for p in request.prompts() for g in self._choices(
            await self.prepare_text_off_loop(request, p), request.n)]

    async def complete(self, request: CompletionRequest) -> TextCompletion:
        generations = await self._text_generations(request)
        texts = await self._run(generations)
        choices = [CompletionChoice(
            text=text, index=index,
            logprobs=_text_logprobs(g, g.logprobs, text),
            finish_reason=g.finish_reason or "stop")
            for index, (g, text) in enumerate(zip(generations, texts, strict=True))]
        return TextCompletion(
            id=new_id("cmpl", "-"), object="text_completion", created=int(time.time()),
            model=request.model, choices=choices,
            usage=_usage(_prompt_total(generations),
                         sum(g.completion_tokens for g in generations), generations))

    async def complete_stream(self, request: CompletionRequest) -> AsyncIterator[Chunk]:
        generations = await self._text_generations(request)
        cid, created, model = new_id("cmpl", "-"), int(time.time()), request.model

        def chunk(index: int, text: str, finish: str | None,
                  logprobs: CompletionLogprobs | None = None) -> Chunk:
            return {"id": cid, "object": "text_completion", "created": created, "model": model,
                    "choices": [{"text": text, "index": index,
                                 "logprobs": None if logprobs is None else logprobs.wire(),
                                 "finish_reason": finish}]}

        async for index, piece, entries in self.traced(generations):
            generation = generations[index]
            if piece is None:
                yield chunk(index, "", generation.finish_reason or "stop")
            elif piece or entries:
                yield chunk(index, piece, None, _text_logprobs(generation, entries, piece))
        last = usage_chunk(id=cid, model=model, created=created, obj="text_completion",
                           prompt_tokens=_prompt_total(generations),
                           completion_tokens=sum(g.completion_tokens for g in generations),
                           cached_tokens=_cached(generations))
        yield last


def choice_of(first: Generation, index: int) -> Generation:
    """Choice ``index`` of an ``n > 1`` request: the same prompt, its own sampling state."""
    sampling = first.params.sampling
    if sampling is not None:
        seed = sampling.seed
        sampling = sampling.seeded(None if seed is None else seed + index)
    return Generation(prompt=first.prompt, prompt_tokens=first.prompt_tokens,
                      params=replace(first.params, sampling=sampling), choice=index,
                      first=first)


def _names(generation: Generation) -> list[str] | None:
    """The functions a generation may call, None without tools (every choice of a request
    has the tools of its first)."""
    plan = (generation.first or generation).tools
    return None if plan is None else [f["name"] for f in plan.functions]


def _indexed(chunk: Chunk, index: int) -> Chunk:
    chunk["choices"][0]["index"] = index
    return chunk


def _chat_logprobs(generation: Generation,
                   entries: list[LogprobEntry]) -> ChoiceLogprobs | None:
    if generation.params.logprobs is None:
        return None
    return ChoiceLogprobs(content=[TokenLogprob.model_validate(e) for e in entries],
                          refusal=None)


def _text_logprobs(generation: Generation, entries: list[LogprobEntry],
                   text: str) -> CompletionLogprobs | None:
    """The legacy completions shape; offsets count from the start of the choice's text."""
    if generation.params.logprobs is None:
        return None
    offsets = []
    offset = generation.text_offset
    for entry in entries:
        offsets.append(offset)
        offset += len(entry["token"])
    generation.text_offset = offset
    return CompletionLogprobs(
        tokens=[e["token"] for e in entries], token_logprobs=[e["logprob"] for e in entries],
        top_logprobs=[{t["token"]: t["logprob"] for t in e["top_logprobs"]} for e in entries],
        text_offset=offsets)


def _prompt_total(generations: list[Generation]) -> int:
    """Prompt tokens, counted once per prompt however many choices it has."""
    return sum(g.prompt_tokens for g in generations if not g.choice)


def _cached(generations: list[Generation]) -> int:
    """Prompt tokens found in the cache, counted once per prompt."""
    return sum(g.cached_tokens for g in generations if not g.choice)


def _usage(prompt: int, completion: int, generations: list[Generation]) -> Usage:
    return Usage(prompt_tokens=prompt, completion_tokens=completion,
                 total_tokens=prompt + completion,
                 prompt_tokens_details=PromptTokensDetails(
                     cached_tokens=_cached(generations)))


def chat_chars(request: ChatCompletionRequest) -> int:
    """About how many characters preparing ``request`` reads: its messages' text and tools."""
    chars = message_chars(request)
    if request.tools:
        chars += sum(len(str(tool)) for tool in request.tools)
    return chars
