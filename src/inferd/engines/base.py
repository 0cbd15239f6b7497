"""The engine interface: the one narrow seam between inferd and whatever runs a model.

An engine answers OpenAI-shaped requests with the typed answers of ``inferd.schemas.answers``
(``ChatCompletion``, ``TextCompletion``, ``EmbeddingList``, ``ImagesAnswer``, ...). Streams
yield ``chat.completion.chunk`` / ``text_completion`` dicts (one per token: built and passed
through as plain dicts) and always end with a usage chunk
(``"choices": []`` plus ``"usage"``); the HTTP layer forwards that chunk only when the client
asked for ``stream_options.include_usage``, and the usage recorder always reads it.

Kinds: ``llamacpp`` (GGUF in this process), ``embeddings`` (sentence embeddings in this process),
``diffusers`` (text-to-image pipelines in this process),
``echo`` (answers at once; for tests and benchmarks), and the remote kinds of
``inferd.routing`` (``http``, ``triton``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TypedDict

from inferd.errors import InvalidRequest
from inferd.schemas.answers import (
    ChatCompletion,
    EmbeddingList,
    ImagesAnswer,
    RerankAnswer,
    ScoreList,
    TextCompletion,
)
from inferd.schemas.chunks import Chunk as Chunk  # what streams yield
from inferd.schemas.images import DEFAULT_SIZE, DEFAULT_STEPS, ImageGenerationRequest
from inferd.schemas.openai import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from inferd.schemas.passthrough import Forward, Forwarded
from inferd.schemas.rerank import RerankRequest, ScoreRequest


class TopLogprobEntry(TypedDict):
    """One likely token at a position: its text, log-probability and bytes (a token may hold
    part of a UTF-8 character)."""

    token: str
    logprob: float
    bytes: list[int]


class LogprobEntry(TypedDict):
    """A generated token as an engine reports it (OpenAI's ``ChatCompletionTokenLogprob``):
    a plain dict, built once per token on the engine's thread and sent as it is."""

    token: str
    logprob: float
    bytes: list[int]
    top_logprobs: list[TopLogprobEntry]


# Told ``(step, of)`` after each denoising step of an image generation.
Progress = Callable[[int, int], Awaitable[None]]


@dataclass(frozen=True)
class ImageDefaults:
    """What an image model draws when a request leaves it out, and the most it may be asked
    (``Inference.image_cost`` prices and bounds a request by them). A replica that does not
    say (an ``http`` one) is taken to draw ``DEFAULT_STEPS`` steps at ``DEFAULT_SIZE``."""

    steps: int = DEFAULT_STEPS
    size: str = DEFAULT_SIZE
    guidance_scale: float | None = None
    max_steps: int | None = None
    max_size: str | None = None


@dataclass
class ModelInfo:
    """What an engine says about a model it serves (for ``/v1/models`` and ``/ready``)."""

    name: str
    kind: str
    owned_by: str = "inferd"
    capabilities: frozenset[str] = frozenset()
    context_length: int | None = None
    images: ImageDefaults | None = None  # an image model's defaults and bounds


class Engine:
    """Base class: every method an engine does not support answers 400, naming the model."""

    kind: str = "base"
    capabilities: frozenset[str] = frozenset()

    def __init__(self, name: str) -> None:
        self.name = name

    async def start(self) -> None:
        """Load weights or open connections; called once before the first request."""

    async def close(self) -> None:
        """Release everything ``start`` acquired."""

    def ready(self) -> bool:
        """True once the engine can answer requests."""
        return True

    def info(self) -> ModelInfo:
        return ModelInfo(name=self.name, kind=self.kind, capabilities=self.capabilities)

    def _unsupported(self, what: str) -> InvalidRequest:
        return InvalidRequest(f"The model '{self.name}' does not support {what}.",
                              param="model", code="unsupported_model_operation")

    async def chat(self, request: ChatCompletionRequest) -> ChatCompletion:
        raise self._unsupported("chat completions")

    def chat_stream(self, request: ChatCompletionRequest) -> AsyncIterator[Chunk]:
        raise self._unsupported("chat completions")

    async def complete(self, request: CompletionRequest) -> TextCompletion:
        raise self._unsupported("text completions")

    def complete_stream(self, request: CompletionRequest) -> AsyncIterator[Chunk]:
        raise self._unsupported("text completions")

    async def embed(self, request: EmbeddingRequest) -> EmbeddingList:
        raise self._unsupported("embeddings")

    async def rerank(self, request: RerankRequest) -> RerankAnswer:
        """By default: cosine similarity of this engine's embeddings (see ``similarity``)."""
        from inferd.engines import similarity

        return await similarity.rerank(self.embed, request)

    async def score(self, request: ScoreRequest) -> ScoreList:
        from inferd.engines import similarity

        return await similarity.score(self.embed, request)

    async def forward(self, request: Forward) -> Forwarded:
        """Pass a request through as it is (``http`` replicas that declare the capability)."""
        raise self._unsupported(f"'{request.path}'")

    async def images(self, request: ImageGenerationRequest,
                     progress: Progress | None = None) -> ImagesAnswer:
        """An ``ImagesResponse`` whose ``data`` items carry ``b64_json``."""
        raise self._unsupported("image generation")
