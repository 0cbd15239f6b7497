"""``POST /v1/embeddings``."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from inferd.http import jobs
from inferd.http.deps import PrincipalDep, ServicesDep, read_model
from inferd.http.fast import Answered
from inferd.http.operation import INFER, endpoint
from inferd.http.responses import answer_response
from inferd.schemas import answers as a
from inferd.schemas.openai import EmbeddingRequest

router = APIRouter(tags=["openai"])


@endpoint(router, "POST", "/v1/embeddings", access="key", answer=a.EmbeddingList,
          body=EmbeddingRequest, errors=(*INFER, 409, 413), job=True)
async def create_embeddings(request: Request, services: ServicesDep,
                              principal: PrincipalDep) -> Response:
    if jobs.wants_async(request.scope):  # Prefer: respond-async -> 202 with a durable job
        return Answered(jobs.answer)
    body = await read_model(request, EmbeddingRequest)
    return answer_response(await services.inference.embed(body, principal))
