"""Anthropic's Messages API: ``POST /v1/messages`` and ``POST /v1/messages/count_tokens``.

Requests are translated onto the chat-completions core (``inferd.anthropic``), so they run on
every engine with the caller's limits and metering. Errors on these routes use Anthropic's
shape, ``{"type": "error", "error": {"type", "message"}}``, and its status codes. Keys come as
``x-api-key`` (what the ``anthropic`` SDK and Claude Code send) or ``Authorization: Bearer``;
the ``anthropic-version`` header is accepted and not needed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import orjson
from fastapi import APIRouter, Request
from pydantic import ValidationError
from starlette.responses import Response

from inferd.anthropic import translate
from inferd.anthropic.events import events
from inferd.anthropic.translate import CountTokensRequest, MessagesRequest
from inferd.engines.local import LocalTextEngine
from inferd.errors import ContextLengthExceeded, InferdError, Overloaded, RateLimited
from inferd.http.deps import PrincipalDep, ServicesDep, unless_disconnected
from inferd.http.errors import param_path
from inferd.http.operation import SSE, endpoint
from inferd.http.responses import answer_response, json_response
from inferd.http.sse import sse_response
from inferd.inference import estimate_chat_prompt
from inferd.schemas import answers as a
from inferd.schemas.chunks import Chunk

log = logging.getLogger("inferd.http")

PREFIX = "/v1/messages"
router = APIRouter(tags=["anthropic"])

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
          529: "overloaded_error"}


def error_body(status: int, message: str) -> bytes:
    """Anthropic's error document for ``status``."""
    return orjson.dumps({"type": "error", "error": {"type": _TYPES.get(status, "api_error"),
                                                    "message": message}})


def error_response(exc: Exception) -> Response:
    headers: dict[str, str] = {}
    if isinstance(exc, InferdError):
        # Anthropic says 529 when it is overloaded; inferd's 503 means the same.
        status = 529 if exc.status == 503 else exc.status
        message = translate.own_names(exc.message)
        if isinstance(exc, RateLimited | Overloaded):
            headers["retry-after"] = exc.retry_after_header
    elif isinstance(exc, ValidationError):
        status, message = 400, _validation_message(exc)
    else:
        log.exception("unhandled error on %s", PREFIX, exc_info=exc)
        status, message = 500, "The server had an error while processing your request."
    return Response(error_body(status, message), status_code=status,
                    media_type="application/json", headers=headers)


def _validation_message(exc: ValidationError) -> str:
    first = exc.errors()[0]
    if first.get("type") == "json_invalid":
        return "The request body is not valid JSON."
    where = param_path(first.get("loc", ())) or "body"
    if first.get("type") == "missing":
        return f"{where}: Field required"
    return f"{where}: {first.get('msg', 'invalid value')}"


async def _sse(stream: AsyncIterator[Chunk], model: str) -> AsyncIterator[bytes]:
    try:
        async for name, data in events(stream, model):
            yield b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"
    except Exception as exc:  # after 200 OK an error can only be an event
        status = exc.status if isinstance(exc, InferdError) else 500
        message = exc.message if isinstance(exc, InferdError) else "The stream was interrupted."
        if not isinstance(exc, InferdError):
            log.exception("anthropic stream failed")
        yield b"event: error\ndata: " + error_body(status, message) + b"\n\n"


@endpoint(router, "POST", PREFIX, access="key", answer=a.AnthropicMessage, body=MessagesRequest,
          media=(SSE,), errors=(403, 404, 413, 502, 504, 529), anthropic=True)
async def create_message(request: Request, services: ServicesDep,
                         principal: PrincipalDep) -> Response:
    try:
        body = translate.MessagesRequest.model_validate_json(await request.body())
        chat = translate.to_chat(body)
        for attempt in (1, 2):
            try:
                if body.stream:
                    stream = await unless_disconnected(   # it may wait at a full model
                        request, services.inference.chat_stream(chat, principal))
                else:
                    result = await unless_disconnected(
                        request, services.inference.chat(chat, principal))
                break
            except ContextLengthExceeded as exc:
                # Anthropic's max_tokens is a ceiling every client must send (Claude Code
                # sends 32000): over a smaller context the answer may use what is left.
                if exc.param != "max_tokens" or attempt == 2:
                    raise
                chat.max_tokens = None
    except Exception as exc:
        return error_response(exc)
    if body.stream:
        return sse_response(_sse(stream, body.model))
    return answer_response(translate.from_chat(result, body.model))


@endpoint(router, "POST", PREFIX + "/count_tokens", access="key", answer=a.TokenCount,
          body=CountTokensRequest, errors=(403, 404, 413, 529), anthropic=True)
async def count_tokens(request: Request, services: ServicesDep,
                       principal: PrincipalDep) -> Response:
    """Prompt tokens as the model's own tokenizer and template count them (local engines,
    off the event loop); an estimate of four characters a token for remote ones. Counted
    against the key's limits and recorded in its usage like any request."""
    try:
        body = translate.CountTokensRequest.model_validate_json(await request.body())
        chat = translate.count_request(body)
        services.inference.check_model(principal, body.model)
        estimate = estimate_chat_prompt(chat)

        async def count() -> int:
            engine = services.inference.router.pick(body.model).engine
            if isinstance(engine, LocalTextEngine):
                return (await asyncio.to_thread(engine.prepare_chat, chat)).prompt_tokens
            return estimate

        tokens = await services.inference.count_tokens("count_tokens", body.model, principal,
                                                       estimate, count)
    except Exception as exc:
        return error_response(exc)
    return json_response({"input_tokens": tokens})
