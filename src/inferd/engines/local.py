"""Shared shape of the in-process text engines (llama.cpp and echo).

A concrete engine turns a request into a ``Generation`` (the prompt, token counts, sampling
parameters) and yields text pieces for it; this base class builds every OpenAI answer from that:
chat and text completions, streamed or not, with usage.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from inferd.engines.base import Chunk, Engine
from inferd.errors import UnsupportedParameter
from inferd.schemas.openai import (
    ChatCompletionRequest,
    CompletionRequest,
    Prompt,
    chat_chunk,
    chat_completion,
    new_id,
    usage_chunk,
    usage_dict,
)

# Fields a local engine may ignore without changing the answer a client gets.
IGNORABLE_FIELDS = frozenset({"user", "metadata", "store", "service_tier", "parallel_tool_calls",
                              "prompt_cache_key", "safety_identifier", "stream", "model",
                              "stream_options", "messages", "prompt"})


@dataclass
class Generation:
    """One run of the model: its input and, once finished, its outcome."""

    prompt: Any
    prompt_tokens: int
    params: dict[str, Any]
    completion_tokens: int = 0
    finish_reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    echo: str = ""  # ``echo: true`` on a text completion: the prompt, put before the answer


class LocalTextEngine(Engine):
    """Builds OpenAI answers from an engine's ``generate`` stream of text pieces."""

    capabilities = frozenset({"chat", "completions"})
    # Extra (non-OpenAI) sampling fields this engine honours.
    extra_fields: frozenset[str] = frozenset()

    # -- to implement ---------------------------------------------------------------------
    def prepare_chat(self, request: ChatCompletionRequest) -> Generation:
        raise NotImplementedError

    def prepare_text(self, request: CompletionRequest, prompt: Prompt) -> Generation:
        """``prompt`` is text, or token ids of this model's tokenizer."""
        raise NotImplementedError

    def generate(self, generation: Generation, stream: bool = True) -> AsyncIterator[str]:
        """Yield text pieces; set ``completion_tokens`` and ``finish_reason`` when done.

        ``stream=False`` tells the engine nobody reads the pieces before the end, so it may
        hand the text over in one piece.
        """
        raise NotImplementedError

    # -- validation -----------------------------------------------------------------------
    def check_fields(self, request: ChatCompletionRequest | CompletionRequest) -> None:
        """Refuse, by name, any parameter this engine cannot honour."""
        if request.n not in (None, 1):
            raise UnsupportedParameter(f"The model '{self.name}' supports only n=1.", param="n")
        extras = set(request.model_extra or {}) - IGNORABLE_FIELDS - self.extra_fields
        if extras:
            name = sorted(extras)[0]
            raise UnsupportedParameter(
                f"Unrecognized request argument supplied: {name}", param=name)

    # -- chat -----------------------------------------------------------------------------
    async def chat(self, request: ChatCompletionRequest) -> dict[str, Any]:
        generation = self.prepare_chat(request)
        text = "".join([piece async for piece in self.generate(generation, stream=False)])
        return chat_completion(id=new_id("chatcmpl"), model=request.model, text=text,
                               finish_reason=generation.finish_reason,
                               prompt_tokens=generation.prompt_tokens,
                               completion_tokens=generation.completion_tokens)

    async def chat_stream(self, request: ChatCompletionRequest) -> AsyncIterator[Chunk]:
        generation = self.prepare_chat(request)
        cid, created, model = new_id("chatcmpl"), int(time.time()), request.model
        yield chat_chunk(id=cid, model=model, created=created,
                         delta={"role": "assistant", "content": ""})
        async for piece in self.generate(generation):
            if piece:
                yield chat_chunk(id=cid, model=model, created=created, delta={"content": piece})
        yield chat_chunk(id=cid, model=model, created=created, delta={},
                         finish_reason=generation.finish_reason or "stop")
        yield usage_chunk(id=cid, model=model, created=created, obj="chat.completion.chunk",
                          prompt_tokens=generation.prompt_tokens,
                          completion_tokens=generation.completion_tokens)

    # -- text completions -----------------------------------------------------------------
    async def complete(self, request: CompletionRequest) -> dict[str, Any]:
        generations = [self.prepare_text(request, p) for p in request.prompts()]
        choices = []
        for index, generation in enumerate(generations):
            text = "".join([piece async for piece in self.generate(generation, stream=False)])
            choices.append({"text": generation.echo + text, "index": index, "logprobs": None,
                            "finish_reason": generation.finish_reason or "stop"})
        return {"id": new_id("cmpl"), "object": "text_completion", "created": int(time.time()),
                "model": request.model, "choices": choices,
                "usage": usage_dict(sum(g.prompt_tokens for g in generations),
                                    sum(g.completion_tokens for g in generations))}

    async def complete_stream(self, request: CompletionRequest) -> AsyncIterator[Chunk]:
        generations = [self.prepare_text(request, p) for p in request.prompts()]
        cid, created, model = new_id("cmpl"), int(time.time()), request.model

        def chunk(index: int, text: str, finish: str | None) -> Chunk:
            return {"id": cid, "object": "text_completion", "created": created, "model": model,
                    "choices": [{"text": text, "index": index, "logprobs": None,
                                 "finish_reason": finish}]}

        for index, generation in enumerate(generations):
            if generation.echo:
                yield chunk(index, generation.echo, None)
            async for piece in self.generate(generation):
                if piece:
                    yield chunk(index, piece, None)
            yield chunk(index, "", generation.finish_reason or "stop")
        yield usage_chunk(id=cid, model=model, created=created, obj="text_completion",
                          prompt_tokens=sum(g.prompt_tokens for g in generations),
                          completion_tokens=sum(g.completion_tokens for g in generations))
