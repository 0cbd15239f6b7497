"""``POST /v1/chat/completions``.

The route below is the documented one (OpenAPI). Every chat request, the hottest path of the
gateway, is answered by ``ChatFastPath``: a pure ASGI handler that sits inside the auth
middleware and skips the framework's routing, dependency injection and response classes (see
``inferd.http.fast``); one with ``Prefer: respond-async`` by ``http.jobs.JobsFastPath``. They
call the same ``Inference`` and job service as the route and answer errors in the same OpenAI
shape.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from inferd.http.deps import (
    PrincipalDep,
    ServicesDep,
    read_model,
    unless_disconnected,
    until_disconnected,
)
from inferd.http.fast import FastPath, principal_of, send_error, send_json
from inferd.http.jobs import prefers_async, submit_async, wants_async
from inferd.http.operation import INFER, SSE, endpoint
from inferd.http.responses import json_response
from inferd.http.sse import openai_events, send_sse, sse_response
from inferd.schemas import answers as a
from inferd.schemas.openai import ChatCompletionRequest, legacy_answer, legacy_stream
from inferd.services import Services

PATH = "/v1/chat/completions"
# The proxy toolkit serves OpenAI's chat API without the /v1 prefix; its clients keep working.
PATHS = frozenset({PATH, "/chat/completions"})
router = APIRouter(tags=["openai"])


# The proxy toolkit serves it without the /v1 prefix: the same operation (its jobs run PATH)
@endpoint(router, "POST", "/chat/completions", access="key", answer=a.ChatCompletion,
          body=ChatCompletionRequest, media=(SSE,), errors=(*INFER, 409, 413), job=True)
@endpoint(router, "POST", PATH, access="key", answer=a.ChatCompletion, body=ChatCompletionRequest,
          media=(SSE,), errors=(*INFER, 409, 413), job=True)
async def create_chat_completion(request: Request, services: ServicesDep,
                                 principal: PrincipalDep) -> Response:
    if prefers_async(request):  # Prefer: respond-async -> 202 with a durable job
        return await submit_async(request, services, PATH)
    body = await read_model(request, ChatCompletionRequest)
    if body.stream:
        stream = await services.inference.chat_stream(body, principal)
        if body.legacy_functions:
            stream = legacy_stream(stream)
        return sse_response(openai_events(stream, body.include_usage()))
    result = await unless_disconnected(request, services.inference.chat(body, principal))
    return json_response(legacy_answer(result) if body.legacy_functions else result)


def is_fast(scope: Scope) -> bool:
    """Whether ``ChatFastPath`` answers this request (else the framework's route does)."""
    return scope["path"] in PATHS and scope["method"] == "POST" and not wants_async(scope)


class ChatFastPath(FastPath):
    """Answers ``POST /v1/chat/completions`` directly; everything else goes to ``app``."""

    def takes(self, scope: Scope) -> bool:
        return is_fast(scope)

    async def answer(self, scope: Scope, body: bytes, receive: Receive, send: Send) -> None:
        services: Services = scope["app"].state.services
        inference = services.inference
        try:
            principal = principal_of(scope)
            request = ChatCompletionRequest.model_validate_json(body)
            if request.stream:
                stream = await inference.chat_stream(request, principal)
            else:
                result = await until_disconnected(receive, inference.chat(request, principal))
        except Exception as exc:  # nothing sent yet: answer in the OpenAI error shape
            await send_error(scope, receive, send, exc)
            return
        if request.stream:
            if request.legacy_functions:  # the client sent ``functions``: the legacy shape
                stream = legacy_stream(stream)
            await send_sse(receive, send, openai_events(stream, request.include_usage()))
        else:
            await send_json(send, legacy_answer(result) if request.legacy_functions else result)

