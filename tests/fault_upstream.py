"""An OpenAI-compatible upstream on loopback that fails on purpose, for the replica fault tests.

It speaks the wire protocol vLLM's OpenAI server speaks (``POST /v1/chat/completions`` as JSON
with ``Content-Length`` on a keep-alive connection, or as an SSE stream in chunked encoding
ending with a usage chunk and ``data: [DONE]``; ``GET /health``, ``GET /v1/models``), on a
raw asyncio server so that a fault can be exactly what a broken upstream does on the wire.
The fault is chosen by the first path segment of the replica URL
(``http://127.0.0.1:PORT/<fault>/v1``):

- ``ok``: answers normally (the reply echoes the last user message, word by word);
- ``slow``: answers after ``slow_seconds``;
- ``hang``: a stream sends its first words, then nothing more (the connection stays open);
- ``cut``: a stream sends its first words, then the connection is reset;
- ``garbage``: 200 with a body that is not JSON (a proxy's HTML error page);
- ``halfjson``: 200 with half of the JSON answer (framing intact, JSON truncated);
- ``truncated``: ``Content-Length`` promises the whole answer, half arrives, then the
  connection closes;
- ``flap``: ``503`` for everything (health checks included) while ``down`` is set, else ``ok``;
- ``gate``: an engine of one slot the test drives: each request is held (its last user message
  noted in ``arrivals``) until ``release()`` lets the oldest held one answer.

It runs in a thread with its own event loop, so that tests (and the blocking start of an
``inferd`` subprocess) never stall it.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from typing import Any

from tests.helpers import free_port

WORDS_BEFORE_FAULT = 2  # words a ``hang`` or ``cut`` stream sends first


class FaultUpstream:
    """``with FaultUpstream() as up``: the server for the block; ``up.url(fault)``."""

    def __init__(self) -> None:
        self.port = free_port()
        self.slow_seconds = 5.0
        self.down = False
        self.seen: Counter[str] = Counter()  # POSTs per fault
        self.arrivals: list[str] = []  # ``gate``: each request's user message, in order
        self._gates: list[asyncio.Event] = []  # ``gate``: the requests held, oldest first
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    def url(self, fault: str) -> str:
        return f"http://127.0.0.1:{self.port}/{fault}/v1"

    @property
    def held(self) -> int:
        """``gate``: the requests held now."""
        return len(self._gates)

    def release(self) -> None:
        """``gate``: the oldest request held answers."""
        asyncio.run_coroutine_threadsafe(self._release(), self._loop).result(10)

    async def _release(self) -> None:
        self._gates.pop(0).set()

    def __enter__(self) -> FaultUpstream:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", self.port), self._loop).result(10)
        return self

    def __exit__(self, *exc: Any) -> None:
        async def shutdown() -> None:
            assert self._server is not None
            self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    # -- the wire -----------------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                request_line, *header_lines = head.decode("latin-1").split("\r\n")
                method, target, _ = request_line.split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, _, v in
                           (line.partition(":") for line in header_lines if line)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                fault, _, path = target.lstrip("/").partition("/")
                if not await self._answer(fault, method, "/" + path, body, reader, writer):
                    return
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    async def _answer(self, fault: str, method: str, path: str, body: bytes,
                      reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; False when the connection is finished."""
        if fault == "flap" and self.down:
            return await _json(writer, 503, {"error": {"message": "overloaded",
                                                       "type": "server_error"}})
        if method == "GET":  # /health, /v1/models
            return await _json(writer, 200, {"object": "list", "data": [
                {"id": "fake", "object": "model", "owned_by": "fault-upstream"}]})
        self.seen[fault] += 1
        request = json.loads(body)
        words = _last_user_text(request).split()
        if fault == "slow":
            await asyncio.sleep(self.slow_seconds)
        if fault == "gate":
            self.arrivals.append(" ".join(words))
            gate = asyncio.Event()
            self._gates.append(gate)
            await gate.wait()
        if request.get("stream"):
            return await self._stream(fault, words, reader, writer)
        answer = json.dumps(_completion(words)).encode()
        if fault == "garbage":
            return await _raw(writer, 200, b"<html><body>502 Bad Gateway</body></html>")
        if fault == "halfjson":
            return await _raw(writer, 200, answer[: len(answer) // 2])
        if fault == "truncated":
            writer.write(_head(200, {"Content-Length": str(len(answer))}))
            writer.write(answer[: len(answer) // 2])
            await writer.drain()
            return False
        return await _raw(writer, 200, answer)

    async def _stream(self, fault: str, words: list[str], reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> bool:
        writer.write(_head(200, {"Content-Type": "text/event-stream",
                                 "Transfer-Encoding": "chunked"}))
        events = [_chunk({"role": "assistant", "content": ""})]
        for i, word in enumerate(words):
            if fault in ("hang", "cut") and i == WORDS_BEFORE_FAULT:
                break
            events.append(_chunk({"content": word if i == 0 else " " + word}))
        for event in events:
            writer.write(_sse(event))
            await writer.drain()
        if fault == "hang":  # silent until the client gives up and closes
            await reader.read()
            return False
        if fault == "cut":
            transport = writer.transport
            assert isinstance(transport, asyncio.WriteTransport)
            transport.abort()  # a reset, not a clean end: the body is incomplete
            return False
        usage = {"prompt_tokens": len(words), "completion_tokens": len(words),
                 "total_tokens": 2 * len(words)}
        writer.write(_sse(_chunk({}, finish="stop")))
        writer.write(_sse({**_chunk({}), "choices": [], "usage": usage}))
        writer.write(_encode_chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
        await writer.drain()
        return True


def _last_user_text(request: dict[str, Any]) -> str:
    users = [m for m in request.get("messages", []) if m.get("role") == "user"]
    content = users[-1]["content"] if users else ""
    return content if isinstance(content, str) else ""


def _completion(words: list[str]) -> dict[str, Any]:
    return {"id": "chatcmpl-fault", "object": "chat.completion", "created": 1700000000,
            "model": "fake", "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                                          "message": {"role": "assistant",
                                                      "content": " ".join(words)}}],
            "usage": {"prompt_tokens": len(words), "completion_tokens": len(words),
                      "total_tokens": 2 * len(words)}}


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"id": "chatcmpl-fault", "object": "chat.completion.chunk", "created": 1700000000,
            "model": "fake", "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                          "finish_reason": finish}]}


def _head(status: int, headers: dict[str, str]) -> bytes:
    reason = {200: "OK", 503: "Service Unavailable"}[status]
    lines = [f"HTTP/1.1 {status} {reason}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _raw(writer: asyncio.StreamWriter, status: int, body: bytes) -> bool:
    writer.write(_head(status, {"Content-Type": "application/json",
                                "Content-Length": str(len(body))}) + body)
    await writer.drain()
    return True


async def _json(writer: asyncio.StreamWriter, status: int, value: Any) -> bool:
    return await _raw(writer, status, json.dumps(value).encode())


def _encode_chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _sse(event: dict[str, Any]) -> bytes:
    return _encode_chunk(b"data: " + json.dumps(event).encode() + b"\n\n")
