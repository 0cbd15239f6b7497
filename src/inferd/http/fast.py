"""What the pure-ASGI fast paths share (``ChatFastPath``, ``JobsFastPath``): the ``FastPath``
entry (take the requests it answers, read their body, pass everything else on), reading a
body, answering JSON, and answering an error as the app's exception handlers would.

A fast path sits inside the auth middleware (the principal is in the scope, the request id
set) and skips the framework's routing, dependency injection, exception middleware and response
classes; the framework's route for the same path stays the documented one (OpenAPI).
"""

from __future__ import annotations

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from inferd.auth.principal import Principal
from inferd.errors import AuthenticationFailed
from inferd.http.errors import exception_response


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
    body = orjson.dumps(content)
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


class FastPath:
    """An ASGI middleware answering the requests ``takes`` accepts with ``answer``, given their
    whole body; every other request (and a client gone before its body arrived) goes on to
    ``app`` or ends there."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def takes(self, scope: Scope) -> bool:  # pragma: no cover - each subclass says
        raise NotImplementedError

    async def answer(self, scope: Scope, body: bytes, receive: Receive, send: Send) -> None:
        raise NotImplementedError  # pragma: no cover - each subclass answers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.takes(scope):
            await self.app(scope, receive, send)
            return
        try:
            body = await read_body(receive)  # PayloadTooLarge: RequestGuard answers 413
        except ClientGone:
            return
        await self.answer(scope, body, receive, send)
