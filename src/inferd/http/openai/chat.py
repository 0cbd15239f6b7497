"""``POST /v1/chat/completions``.

Every chat request, the hottest path of the gateway, is answered by ``answer``: a pure ASGI
handler run inside the auth middleware that skips the framework's routing, dependency
injection and response classes (see ``inferd.http.fast``); one with ``Prefer: respond-async`` by
``http.jobs.answer``. The route below is the documented one (OpenAPI) and answers through the
same functions.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from inferd.http import jobs
from inferd.http.deps import until_disconnected
from inferd.http.fast import Answered, header, principal_of, send_answer, send_error
from inferd.http.operation import INFER, SSE, endpoint
from inferd.http.sse import openai_events, send_sse
from inferd.routing.affinity import session_key
from inferd.schemas import answers as a
from inferd.schemas.openai import ChatCompletionRequest, legacy_answer, legacy_stream
from inferd.services import Services

PATH = "/v1/chat/completions"
# The proxy toolkit serves OpenAI's chat API without the /v1 prefix; its clients keep working.
PATHS = frozenset({PATH, "/chat/completions"})
router = APIRouter(tags=["openai"])
SESSION = b"x-session-id"


# The proxy toolkit serves it without the /v1 prefix: the same operation (its jobs run PATH)
@endpoint(router, "POST", "/chat/completions", access="key", answer=a.ChatCompletion,
          body=ChatCompletionRequest, media=(SSE,), errors=(*INFER, 409, 413), job=True)
@endpoint(router, "POST", PATH, access="key", answer=a.ChatCompletion, body=ChatCompletionRequest,
          media=(SSE,), errors=(*INFER, 409, 413), job=True)
async def create_chat_completion(request: Request) -> Response:
    return Answered(jobs.answer if jobs.wants_async(request.scope) else answer)


async def answer(scope: Scope, body: bytes, receive: Receive, send: Send) -> None:
    """``POST /v1/chat/completions`` with ``body``: the completion, its stream, or the error."""
    services: Services = scope["app"].state.services
    inference = services.inference
    try:
        principal = principal_of(scope)
        request = ChatCompletionRequest.model_validate_json(body)
        request._route = session_key(header(scope, SESSION))  # kept on one replica
        if request.stream:
            # nothing is sent until it starts (it may wait its turn at a model at
            # capacity); a client that leaves meanwhile leaves the queue
            stream = await until_disconnected(receive, inference.chat_stream(request, principal),
                                              scope)
        else:
            result = await until_disconnected(receive, inference.chat(request, principal), scope)
    except Exception as exc:  # nothing sent yet: answer in the OpenAI error shape
        await send_error(scope, receive, send, exc)
        return
    if request.stream:
        if request.legacy_functions:  # the client sent ``functions``: the legacy shape
            stream = legacy_stream(stream)
        await send_sse(receive, send, openai_events(stream, request.include_usage()), scope)
    else:
        await send_answer(send, legacy_answer(result) if request.legacy_functions else result)
