"""ASGI middleware: body size limit (413) and request ids."""

from __future__ import annotations

import itertools
import os
import re
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from inferd.errors import PayloadTooLarge, envelope

# A client's X-Request-ID is kept when it is 1 to 64 visible ASCII characters (what logs and the
# usage table's ``request_id`` column hold); any other value is replaced by a generated id.
MAX_REQUEST_ID = 64
_CLIENT_ID = re.compile(rb"[!-~]{1,%d}\Z" % MAX_REQUEST_ID)


class RequestGuard:
    """Refuses bodies over ``max_body_bytes`` with 413 and tags responses with a request id
    (the client's ``X-Request-ID`` when it is well-formed, else a new one).

    A declared ``Content-Length`` over the limit is refused before any byte is read; a chunked
    body is counted as it arrives.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int, max_file_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_file_bytes = max_file_bytes
        # Request ids: 16 random hex digits per app, then a counter (no syscall per request).
        self._id_prefix = os.urandom(8).hex().encode()
        self._ids = itertools.count()

    def _limit(self, path: str) -> int:
        return self.max_file_bytes if path.endswith("/files") else self.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit(scope.get("path", ""))
        request_id = None
        declared = None
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                declared = value
            elif name == b"x-request-id" and _CLIENT_ID.match(value):
                request_id = value
        rid = request_id or b"%s%016x" % (self._id_prefix, next(self._ids))
        scope.setdefault("state", {})["request_id"] = rid.decode("latin-1")
        # bytes.isdigit() is true for ASCII digits only (unlike str.isdigit(): inferd.numerals)
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._reject(send, rid, limit)
            return
        received = 0
        started = False

        async def guarded_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # raised into the app, whose error handler answers 413
                    raise PayloadTooLarge(
                        f"Request body is larger than the limit of {limit} bytes.")
            return message

        async def tagged_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers: list[Any] = list(message.get("headers", []))
                headers.append((b"x-request-id", rid))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, guarded_receive, tagged_send)
        except PayloadTooLarge:
            if not started:
                await self._reject(send, rid, limit)

    async def _reject(self, send: Send, rid: bytes, limit: int) -> None:
        body = orjson.dumps(envelope(PayloadTooLarge(
            f"Request body is larger than the limit of {limit} bytes.")))
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"x-request-id", rid)]})
        await send({"type": "http.response.body", "body": body})
