"""``POST /v1/chat/completions``.

The route below is the documented one (OpenAPI) and serves ``Prefer: respond-async``. Every
other chat request, the hottest path of the gateway, is answered by ``ChatFastPath``: a pure
ASGI handler that sits inside the auth middleware and skips the framework's routing, dependency
injection and response classes. Both call the same ``Inference`` and answer errors in the same
OpenAI shape.
"""

from __future__ import annotations

import logging

import orjson
from fastapi import APIRouter, Request
from pydantic import ValidationError
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from inferd.auth.principal import ANONYMOUS, Principal
from inferd.errors import InferdError, InternalError
from inferd.http.deps import (
    PrincipalDep,
    ServicesDep,
    read_model,
    unless_disconnected,
    until_disconnected,
)
from inferd.http.errors import inferd_error_response, validation_error_response
from inferd.http.jobs import prefers_async, respond_async, submit_async
from inferd.http.responses import json_response
from inferd.http.sse import openai_events, send_sse, sse_response
from inferd.schemas.openai import ChatCompletionRequest
from inferd.services import Services

log = logging.getLogger("inferd.http")

PATH = "/v1/chat/completions"
# S3's proxy serves OpenAI's chat API without the /v1 prefix; its clients keep working.
PATHS = frozenset({PATH, "/chat/completions"})
router = APIRouter(tags=["openai"])


@router.post("/chat/completions", include_in_schema=False)
@router.post(PATH)
async def create_chat_completion(request: Request, services: ServicesDep,
                                 principal: PrincipalDep) -> Response:
    if prefers_async(request):  # Prefer: respond-async -> 202 with a durable job
        return await submit_async(request, services, PATH)
    body = await read_model(request, ChatCompletionRequest)
    if body.stream:
        stream = await services.inference.chat_stream(body, principal)
        return sse_response(openai_events(stream, body.include_usage()))
    result = await unless_disconnected(request, services.inference.chat(body, principal))
    return json_response(result)


class ClientGone(Exception):
    """The client disconnected before its request body arrived."""


async def read_body(receive: Receive) -> bytes:
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientGone
    body: bytes = message.get("body", b"")
    if not message.get("more_body"):
        return body
    parts = [body]
    while message.get("more_body"):
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        parts.append(message.get("body", b""))
    return b"".join(parts)


def _wants_async(scope: Scope) -> bool:
    return any(name == b"prefer" and respond_async(value.decode("latin-1"))
               for name, value in scope["headers"])


def is_fast(scope: Scope) -> bool:
    """Whether ``ChatFastPath`` answers this request (else the framework's route does)."""
    return scope["path"] in PATHS and scope["method"] == "POST" and not _wants_async(scope)


def error_for(exc: Exception) -> Response:
    """The OpenAI-shaped answer the app's exception handlers would give for ``exc``."""
    if isinstance(exc, InferdError):
        return inferd_error_response(exc)
    if isinstance(exc, ValidationError):
        return validation_error_response(list(exc.errors()))
    log.exception("unhandled error on POST %s", PATH, exc_info=exc)
    return inferd_error_response(InternalError())


class ChatFastPath:
    """Answers ``POST /v1/chat/completions`` directly; everything else goes to ``app``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_fast(scope):
            await self.app(scope, receive, send)
            return
        try:
            body = await read_body(receive)  # PayloadTooLarge: RequestGuard answers 413
        except ClientGone:
            return
        services: Services = scope["app"].state.services
        principal: Principal = (scope.get("state") or {}).get("principal", ANONYMOUS)
        inference = services.inference
        try:
            request = ChatCompletionRequest.model_validate_json(body)
            if request.stream:
                stream = await inference.chat_stream(request, principal)
            else:
                result = await until_disconnected(receive, inference.chat(request, principal))
        except Exception as exc:  # nothing sent yet: answer in the OpenAI error shape
            await error_for(exc)(scope, receive, send)
            return
        if request.stream:
            await send_sse(receive, send, openai_events(stream, request.include_usage()))
        else:
            await send_json(send, result)


async def send_json(send: Send, content: object, status: int = 200) -> None:
    body = orjson.dumps(content)
    start: Message = {"type": "http.response.start", "status": status,
                      "headers": [(b"content-type", b"application/json"),
                                  (b"content-length", b"%d" % len(body))]}
    await send(start)
    await send({"type": "http.response.body", "body": body})
