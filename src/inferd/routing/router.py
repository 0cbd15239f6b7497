"""The router: a public model name (or alias) to the replicas that serve it.

``Router.pick`` chooses a replica for a request; the request methods call its engine. Replicas
are added at start-up from the configured local models (and, with the control plane, from the
database).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from inferd.engines.base import Chunk, Engine, ModelInfo
from inferd.engines.streams import primed
from inferd.errors import ModelNotFound, Unavailable
from inferd.schemas.openai import ChatCompletionRequest, CompletionRequest, EmbeddingRequest


@dataclass
class Replica:
    """One place a model runs."""

    id: str
    model: str
    engine: Engine
    weight: float = 1.0
    in_flight: int = 0
    meta: dict[str, Any] = field(default_factory=dict)


class Router:
    """Maps model names to replicas and sends requests to one of them."""

    def __init__(self) -> None:
        self._replicas: dict[str, list[Replica]] = {}
        self._aliases: dict[str, str] = {}

    def add(self, replica: Replica, aliases: list[str] | None = None) -> None:
        self._replicas.setdefault(replica.model, []).append(replica)
        for alias in aliases or []:
            self._aliases[alias] = replica.model

    def resolve(self, name: str) -> str:
        """The canonical model name for ``name``; raises ``ModelNotFound``."""
        canonical = self._aliases.get(name, name)
        if canonical not in self._replicas:
            raise ModelNotFound(name)
        return canonical

    def pick(self, name: str) -> Replica:
        replicas = self._replicas[self.resolve(name)]
        ready = [r for r in replicas if r.engine.ready()]
        if not ready:
            raise Unavailable(f"No replica of model '{name}' is ready.")
        return min(ready, key=lambda r: r.in_flight / r.weight)

    def models(self) -> list[ModelInfo]:
        return [replicas[0].engine.info() for replicas in self._replicas.values()]

    def model_names(self) -> list[str]:
        return list(self._replicas)

    def engines(self) -> list[Engine]:
        return [r.engine for replicas in self._replicas.values() for r in replicas]

    # -- requests ---------------------------------------------------------------------------
    async def chat(self, request: ChatCompletionRequest) -> dict[str, Any]:
        replica = self.pick(request.model)
        replica.in_flight += 1
        try:
            return await replica.engine.chat(request)
        finally:
            replica.in_flight -= 1

    async def complete(self, request: CompletionRequest) -> dict[str, Any]:
        replica = self.pick(request.model)
        replica.in_flight += 1
        try:
            return await replica.engine.complete(request)
        finally:
            replica.in_flight -= 1

    async def embed(self, request: EmbeddingRequest) -> dict[str, Any]:
        replica = self.pick(request.model)
        replica.in_flight += 1
        try:
            return await replica.engine.embed(request)
        finally:
            replica.in_flight -= 1

    async def chat_stream(self, request: ChatCompletionRequest) -> AsyncIterator[Chunk]:
        replica = self.pick(request.model)
        return await primed(_counted(replica, replica.engine.chat_stream(request)))

    async def complete_stream(self, request: CompletionRequest) -> AsyncIterator[Chunk]:
        replica = self.pick(request.model)
        return await primed(_counted(replica, replica.engine.complete_stream(request)))


async def _counted(replica: Replica, stream: AsyncIterator[Chunk]) -> AsyncIterator[Chunk]:
    replica.in_flight += 1
    try:
        async for chunk in stream:
            yield chunk
    finally:
        replica.in_flight -= 1
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()
