"""``/v1/rerank`` (Cohere/Jina shape) and ``/v1/score`` (vLLM's): passed through to replicas
that serve them, else answered from an embedding model (see ``inferd.engines.similarity``)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from inferd.http.deps import PrincipalDep, ServicesDep, read_model, unless_disconnected
from inferd.http.responses import json_response
from inferd.schemas.rerank import RerankRequest, ScoreRequest

router = APIRouter(tags=["openai"])


@router.post("/v2/rerank", include_in_schema=False)  # Cohere's v2 client
@router.post("/v1/rerank")
async def rerank(request: Request, services: ServicesDep, principal: PrincipalDep) -> Response:
    body = await read_model(request, RerankRequest)
    return json_response(await unless_disconnected(
        request, services.inference.rerank(body, principal)))


@router.post("/v1/score")
async def score(request: Request, services: ServicesDep, principal: PrincipalDep) -> Response:
    body = await read_model(request, ScoreRequest)
    return json_response(await unless_disconnected(
        request, services.inference.score(body, principal)))
