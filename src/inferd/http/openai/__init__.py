"""The OpenAI-compatible API: chat, completions, embeddings, models, responses."""

from __future__ import annotations

from fastapi import APIRouter

from inferd.http.openai import (
    chat,
    completions,
    embeddings,
    models,
    passthrough,
    rerank,
    responses,
)

router = APIRouter()
for module in (chat, completions, embeddings, models, passthrough, rerank, responses):
    router.include_router(module.router)
