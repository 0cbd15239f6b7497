"""Server-sent events for OpenAI-style streams."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import orjson
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from inferd.errors import InferdError, StreamInterrupted, envelope
from inferd.http.disconnect import cancel_on_disconnect
from inferd.schemas.chunks import Chunk

log = logging.getLogger("inferd.http")

DONE = b"data: [DONE]\n\n"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _is_usage_chunk(chunk: Chunk) -> bool:
    return not chunk.get("choices") and "usage" in chunk


async def openai_events(stream: AsyncIterator[Chunk],
                        include_usage: bool) -> AsyncIterator[bytes]:
    """``data: {chunk}`` lines, the usage chunk only if asked for, then ``[DONE]``.

    An error after the stream began cannot change the status any more: it is sent as a final
    ``data: {"error": ...}`` event, as OpenAI-compatible servers do.
    """
    try:
        async for chunk in stream:
            if _is_usage_chunk(chunk) and not include_usage:
                continue
            if include_usage and "usage" not in chunk:
                chunk = {**chunk, "usage": None}
            yield b"data: " + orjson.dumps(chunk) + b"\n\n"
    except InferdError as exc:
        yield b"data: " + orjson.dumps(envelope(exc)) + b"\n\n"
    except Exception:
        log.exception("stream failed")
        yield b"data: " + orjson.dumps(envelope(StreamInterrupted())) + b"\n\n"
    yield DONE


def sse_response(events: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS)


_RAW_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"),
                *((k.lower().encode(), v.encode()) for k, v in SSE_HEADERS.items())]


async def send_sse(receive: Receive, send: Send, events: AsyncIterator[bytes],
                   scope: Scope | None = None) -> None:
    """``sse_response`` for a raw ASGI handler: each event is sent as soon as it is made.

    When the client goes away (``http.disconnect.cancel_on_disconnect``: the server's callback
    when ``scope`` carries it, else one watcher task), the stream (and with it the upstream
    request or the generation) is cancelled and closed, and this returns normally.
    """
    try:
        with cancel_on_disconnect(receive, scope) as client:
            try:
                await send({"type": "http.response.start", "status": 200,
                            "headers": _RAW_HEADERS})
                async for event in events:
                    await send({"type": "http.response.body", "body": event,
                                "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            except asyncio.CancelledError:
                if not client.gone:
                    raise
                asyncio.current_task().uncancel()  # type: ignore[union-attr]
    finally:  # after the watcher is gone
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()  # a no-op when the stream ended; else releases the upstream
