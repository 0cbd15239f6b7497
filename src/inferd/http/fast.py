"""What the pure-ASGI fast paths share (``http.openai.chat.answer``, ``http.jobs.answer``):
reading a body, answering JSON, answering an error as the app's exception handlers would, and
``Answered``, through which the framework's route for the same operation gives the same answer.

A fast path's answer runs inside the request guard and the auth middleware (the principal is
in the scope, the request id set) and skips the framework's routing, dependency injection,
exception middleware and response classes: ``inferd.app.create_app`` sends the requests it
answers there. The framework's route for the same operation stays the documented one (OpenAPI)
and answers through the same function (``Answered``), so the two cannot differ.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import orjson
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from inferd.auth.principal import Principal
from inferd.errors import AuthenticationFailed
from inferd.http.errors import exception_response
from inferd.schemas import answers


class ClientGone(Exception):
    """The client disconnected before its request body arrived."""


async def read_body(receive: Receive) -> bytes:
    """The whole request body (``PayloadTooLarge`` from ``RequestGuard`` passes through: it
    answers 413)."""
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


NO_PRINCIPAL = ("This request has no authenticated caller. Send an API key as "
                "'Authorization: Bearer KEY'.")


def principal_of(scope: Scope) -> Principal:
    """The caller, as the auth middleware left it in the scope (``http.deps.get_principal``).

    A request that reached a route without one (it did not pass the auth middleware) is
    refused with 401: a missing caller is never taken for an admin.
    """
    principal: Principal | None = (scope.get("state") or {}).get("principal")
    if principal is None:
        raise AuthenticationFailed(NO_PRINCIPAL, code="missing_api_key")
    return principal


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of header ``name`` (lower case), as the framework's ``headers.get``."""
    for key, value in scope["headers"]:
        if key == name:
            text: str = value.decode("latin-1")
            return text
    return None


async def send_json(send: Send, content: object, status: int = 200,
                    headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send_body(send, orjson.dumps(content), status, headers)


async def send_answer(send: Send, answer: answers.Answer) -> None:
    """A typed answer as it goes on the wire (``Answer.wire_json``)."""
    await send_body(send, answer.wire_json())


async def send_body(send: Send, body: bytes, status: int = 200,
                    headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """A JSON body already serialised."""
    start: Message = {"type": "http.response.start", "status": status,
                      "headers": [(b"content-type", b"application/json"),
                                  (b"content-length", b"%d" % len(body)), *(headers or ())]}
    await send(start)
    await send({"type": "http.response.body", "body": body})


async def send_error(scope: Scope, receive: Receive, send: Send, exc: Exception) -> None:
    """Answer ``exc`` (nothing sent yet) in the OpenAI error shape, with the status the app's
    exception handlers give it."""
    response = exception_response(exc, scope["method"], scope["path"])
    await response(scope, receive, send)


# A fast path's answer: given the request's scope and whole body, it answers every outcome
# itself (errors in the OpenAI shape); ``receive`` then only tells of a disconnect.
Answer = Callable[[Scope, bytes, Receive, Send], Awaitable[None]]


async def answer_with(answer: Answer, scope: Scope, receive: Receive, send: Send) -> None:
    """Read the whole body, then ``answer``; a client gone before its body arrived gets
    nothing."""
    try:
        body = await read_body(receive)  # PayloadTooLarge: RequestGuard answers 413
    except ClientGone:
        return
    await answer(scope, body, receive, send)


def hot_app(answer: Answer) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """The ASGI app that answers every request with ``answer``."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await answer_with(answer, scope, receive, send)

    return app


class Answered(Response):
    """What a framework route returns for an operation a fast path answers: the fast path's
    own ``answer``, run as the response (the route reads no body: it is still to be read)."""

    def __init__(self, answer: Answer) -> None:
        super().__init__()
        self.answer = answer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await answer_with(self.answer, scope, receive, send)
