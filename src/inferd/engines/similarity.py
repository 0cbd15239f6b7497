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

from inferd.errors import InvalidRequest, UpstreamError
from inferd.schemas.answers import (
    EmbeddingList,
    RerankAnswer,
    RerankDocument,
    RerankResult,
    Score,
    ScoreList,
    TokenCountUsage,
)
from inferd.schemas.openai import EmbeddingRequest
from inferd.schemas.rerank import RerankRequest, ScoreRequest

Embed = Callable[[EmbeddingRequest], Awaitable[EmbeddingList]]


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0


async def _vectors(embed: Embed, model: str,
                   texts: list[str]) -> tuple[list[list[float]], int]:
    result = await embed(EmbeddingRequest(model=model, input=texts))
    data = sorted(result.data, key=lambda d: d.index)
    tokens = result.usage.total_tokens if result.usage is not None else 0
    vectors = [d.embedding for d in data]
    if not all(isinstance(v, list) for v in vectors):  # asked as floats: a replica's fault
        raise UpstreamError(f"The embeddings of '{model}' came back as other than floats.")
    return [v for v in vectors if isinstance(v, list)], tokens


async def rerank(embed: Embed, request: RerankRequest) -> RerankAnswer:
    texts = request.texts()
    vectors, tokens = await _vectors(embed, request.model, [request.query, *texts])
    scores = [cosine(vectors[0], v) for v in vectors[1:]]
    order = sorted(range(len(texts)), key=lambda i: scores[i], reverse=True)
    results = []
    for index in order[: request.top_n or len(order)]:
        result = RerankResult(index=index, relevance_score=scores[index])
        if request.return_documents:
            result.document = RerankDocument(text=texts[index])
        results.append(result)
    return RerankAnswer(id=f"rerank-{uuid.uuid4().hex[:24]}", model=request.model,
                        results=results,
                        usage=TokenCountUsage(prompt_tokens=tokens, total_tokens=tokens))


async def score(embed: Embed, request: ScoreRequest) -> ScoreList:
    try:
        pairs = request.pairs()
    except ValueError as exc:
        raise InvalidRequest(str(exc), param="text_2") from None
    unique = list(dict.fromkeys(t for pair in pairs for t in pair))
    vectors, tokens = await _vectors(embed, request.model, unique)
    by_text = dict(zip(unique, vectors, strict=True))
    data = [Score(index=i, object="score", score=cosine(by_text[a], by_text[b]))
            for i, (a, b) in enumerate(pairs)]
    return ScoreList(id=f"score-{uuid.uuid4().hex[:24]}", object="list", model=request.model,
                     data=data, usage=TokenCountUsage(prompt_tokens=tokens, total_tokens=tokens),
                     created=int(time.time()))
