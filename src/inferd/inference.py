"""The inference service: what the HTTP layer and the job workers call to run a request.

It sits between the callers and the router, and is where cross-cutting work on every request
belongs (limits, usage metering) so that the HTTP routes and the workers share one path.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from inferd.auth.principal import ANONYMOUS, Principal
from inferd.engines.base import Chunk
from inferd.routing.router import Router
from inferd.schemas.openai import ChatCompletionRequest, CompletionRequest, EmbeddingRequest


class Inference:
    """Runs chat, completion and embedding requests through the router."""

    def __init__(self, router: Router) -> None:
        self.router = router

    async def chat(self, request: ChatCompletionRequest,
                  principal: Principal = ANONYMOUS) -> dict[str, Any]:
        return await self.router.chat(request)

    async def chat_stream(self, request: ChatCompletionRequest,
                         principal: Principal = ANONYMOUS) -> AsyncIterator[Chunk]:
        """A started stream: errors before the first chunk are raised here."""
        return await self.router.chat_stream(request)

    async def complete(self, request: CompletionRequest,
                      principal: Principal = ANONYMOUS) -> dict[str, Any]:
        return await self.router.complete(request)

    async def complete_stream(self, request: CompletionRequest,
                             principal: Principal = ANONYMOUS) -> AsyncIterator[Chunk]:
        return await self.router.complete_stream(request)

    async def embed(self, request: EmbeddingRequest,
                   principal: Principal = ANONYMOUS) -> dict[str, Any]:
        return await self.router.embed(request)
