"""Rerank and score from an embedding model: cosine similarity of sentence embeddings.

This is what an engine without a cross-encoder answers ``/v1/rerank`` and ``/v1/score`` with.
Cosine similarity of bi-encoder embeddings ranks well for retrieval but its scores are not
calibrated relevance probabilities (they lie in [-1, 1]); a real reranker served by an ``http``
replica is better where ranking quality matters.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from inferd.errors import InvalidRequest
from inferd.schemas.openai import EmbeddingRequest
from inferd.schemas.rerank import RerankRequest, ScoreRequest

Embed = Callable[[EmbeddingRequest], Awaitable[dict[str, Any]]]


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0


async def _vectors(embed: Embed, model: str,
                   texts: list[str]) -> tuple[list[list[float]], int]:
    result = await embed(EmbeddingRequest(model=model, input=texts))
    data = sorted(result["data"], key=lambda d: d["index"])
    tokens = int((result.get("usage") or {}).get("total_tokens") or 0)
    return [d["embedding"] for d in data], tokens


async def rerank(embed: Embed, request: RerankRequest) -> dict[str, Any]:
    texts = request.texts()
    vectors, tokens = await _vectors(embed, request.model, [request.query, *texts])
    scores = [cosine(vectors[0], v) for v in vectors[1:]]
    order = sorted(range(len(texts)), key=lambda i: scores[i], reverse=True)
    results = []
    for index in order[: request.top_n or len(order)]:
        result: dict[str, Any] = {"index": index, "relevance_score": scores[index]}
        if request.return_documents:
            result["document"] = {"text": texts[index]}
        results.append(result)
    return {"id": f"rerank-{uuid.uuid4().hex[:24]}", "model": request.model,
            "results": results, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


async def score(embed: Embed, request: ScoreRequest) -> dict[str, Any]:
    try:
        pairs = request.pairs()
    except ValueError as exc:
        raise InvalidRequest(str(exc), param="text_2") from None
    unique = list(dict.fromkeys(t for pair in pairs for t in pair))
    vectors, tokens = await _vectors(embed, request.model, unique)
    by_text = dict(zip(unique, vectors, strict=True))
    data = [{"index": i, "object": "score", "score": cosine(by_text[a], by_text[b])}
            for i, (a, b) in enumerate(pairs)]
    return {"id": f"score-{uuid.uuid4().hex[:24]}", "object": "list",
            "created": int(time.time()), "model": request.model, "data": data,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
