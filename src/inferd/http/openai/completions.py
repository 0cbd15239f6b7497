"""``POST /v1/completions``."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from inferd.http import jobs
from inferd.http.deps import PrincipalDep, ServicesDep, read_model, unless_disconnected
from inferd.http.fast import Answered
from inferd.http.operation import INFER, SSE, endpoint
from inferd.http.responses import answer_response
from inferd.http.sse import openai_events, sse_response
from inferd.routing.affinity import session_key
from inferd.schemas import answers as a
from inferd.schemas.openai import CompletionRequest

router = APIRouter(tags=["openai"])


@endpoint(router, "POST", "/v1/completions", access="key", answer=a.TextCompletion,
          body=CompletionRequest, media=(SSE,), errors=(*INFER, 409, 413), job=True)
async def create_completion(request: Request, services: ServicesDep,
                              principal: PrincipalDep) -> Response:
    if jobs.wants_async(request.scope):  # Prefer: respond-async -> 202 with a durable job
        return Answered(jobs.answer)
    body = await read_model(request, CompletionRequest)
    body._route = session_key(request.headers.get("x-session-id"))  # kept on one replica
    if body.stream:
        # nothing is sent until it starts (it may wait its turn at a model at capacity)
        stream = await unless_disconnected(request,
                                           services.inference.complete_stream(body, principal))
        return sse_response(openai_events(stream, body.include_usage()))
    result = await unless_disconnected(request, services.inference.complete(body, principal))
    return answer_response(result)
