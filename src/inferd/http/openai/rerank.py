"""``/v1/rerank`` (Cohere/Jina shape) and ``/v1/score`` (vLLM's): passed through to replicas
that serve them, else answered from an embedding model (see ``inferd.engines.similarity``)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from inferd.http.deps import PrincipalDep, ServicesDep, read_model, unless_disconnected
from inferd.http.operation import INFER, endpoint
from inferd.http.responses import answer_response
from inferd.schemas import answers as a
from inferd.schemas.rerank import RerankRequest, ScoreRequest

router = APIRouter(tags=["openai"])


@endpoint(router, "POST", "/v2/rerank", access="key", document=False)  # Cohere's v2 client
@endpoint(router, "POST", "/v1/rerank", access="key", answer=a.RerankAnswer, body=RerankRequest,
          errors=(*INFER, 413))
async def rerank(request: Request, services: ServicesDep, principal: PrincipalDep) -> Response:
    body = await read_model(request, RerankRequest)
    return answer_response(await unless_disconnected(
        request, services.inference.rerank(body, principal)))


@endpoint(router, "POST", "/v1/score", access="key", answer=a.ScoreList, body=ScoreRequest,
          errors=(*INFER, 413))
async def score(request: Request, services: ServicesDep, principal: PrincipalDep) -> Response:
    body = await read_model(request, ScoreRequest)
    return answer_response(await unless_disconnected(
        request, services.inference.score(body, principal)))
