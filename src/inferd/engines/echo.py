"""An engine that answers at once by echoing the prompt back, word by word.

It exists so that tests and benchmarks can measure inferd itself (queueing, routing, the HTTP
layer) without the cost of a model. ``echo_delay`` adds a pause per word to imitate generation.
"""

from __future__ import annotations

import asyncio
import hashlib
import struct
from collections.abc import AsyncIterator

from inferd.engines.local import Generation, GenerationParams, LocalTextEngine
from inferd.engines.tools import unreadable
from inferd.schemas.answers import Embedding, EmbeddingList, Usage
from inferd.schemas.openai import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    NonTextContent,
    Prompt,
)
from inferd.settings import ModelSpec

EMBEDDING_DIMENSIONS = 8


class EchoEngine(LocalTextEngine):
    """Replies with the last user message (chat) or the prompt (completions)."""

    kind = "echo"
    capabilities = frozenset({"chat", "completions", "embeddings"})

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec.name)
        self.delay = spec.echo_delay

    def _generation(self, text: str, limit: int | None, stop: list[str]) -> Generation:
        return Generation(prompt=text, prompt_tokens=len(text.split()),
                          params=GenerationParams(max_tokens=limit, stop=stop))

    def prepare_chat(self, request: ChatCompletionRequest) -> Generation:
        self.check_fields(request)
        for index, message in enumerate(request.messages):  # text only, like a text model
            try:
                message.text()
            except NonTextContent as exc:
                raise unreadable(self.name, index, exc) from exc
        users = [m for m in request.messages if m.role == "user"]
        text = users[-1].text() if users else request.messages[-1].text()
        return self._generation(text, request.token_limit(), request.stop_list())

    def prepare_text(self, request: CompletionRequest, prompt: Prompt) -> Generation:
        self.check_fields(request)
        text = prompt if isinstance(prompt, str) else " ".join(map(str, prompt))
        generation = self._generation(text, request.token_limit(), request.stop_list())
        if request.echo:
            generation.params.echo = text
        return generation

    async def generate(self, generation: Generation, stream: bool = True) -> AsyncIterator[str]:
        params = generation.params
        limit = params.max_tokens
        generation.finish_reason = "stop"
        if params.echo is not None:  # ``echo: true``: the prompt comes first
            yield params.echo
        words = (generation.prompt if isinstance(generation.prompt, str)
                 else " ".join(map(str, generation.prompt))).split()
        for index, word in enumerate(words):
            if limit is not None and index >= limit:
                generation.finish_reason = "length"
                return
            if word in params.stop:
                return
            if self.delay:
                await asyncio.sleep(self.delay)
            generation.completion_tokens += 1
            yield word if index == 0 else f" {word}"

    async def embed(self, request: EmbeddingRequest) -> EmbeddingList:
        data = []
        tokens = 0
        for index, given in enumerate(request.inputs()):
            text = given if isinstance(given, str) else " ".join(map(str, given))
            digest = hashlib.sha256(text.encode()).digest()
            vector = [v / 2**31 for v in struct.unpack("<8i", digest)]
            tokens += len(text.split())
            data.append(Embedding(object="embedding", index=index, embedding=vector))
        return EmbeddingList(object="list", data=data, model=request.model,
                             usage=Usage(prompt_tokens=tokens, total_tokens=tokens))
