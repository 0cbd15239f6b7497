"""The ``queue`` replica kind: sync requests and streams to a model that only workers host
(``inferd worker --model NAME``), over RabbitMQ request/reply.

A gateway publishes the request on ``<prefix>.rpc.<model>`` with ``reply_to`` its own exclusive
reply queue and a correlation id; a worker hosting the model runs it on its local engine and
answers on the reply queue: one ``result`` message, or ``chunk`` messages then ``end`` for a
stream (token by token, as generated), or an ``error``. Requests are not persistent: a sync
client waits for its answer, so one lost with a broker restart fails with a clear 502/504.
A traced request's message carries its ``traceparent`` in its headers; a worker with a tracer
answers it in a span of kind server, the child of the gateway's attempt.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from typing import TypedDict, TypeVar

import aio_pika
import orjson
from aio_pika.abc import (
    AbstractIncomingMessage,
    AbstractRobustChannel,
    AbstractRobustConnection,
    FieldValue,
)
from opentelemetry.context import attach, detach
from pydantic import ValidationError

from inferd.engines.base import Chunk, Engine
from inferd.errors import ErrorObject, InferdError, UpstreamError, UpstreamTimeout
from inferd.jsontypes import JsonObject
from inferd.schemas.answers import Answer, ChatCompletion, EmbeddingList, TextCompletion
from inferd.schemas.openai import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from inferd.tasks import bounded, cancel_and_wait
from inferd.tracing import SpanKind, Tracer, outgoing, received, with_tracer

log = logging.getLogger("inferd.engines.queue")

Request = ChatCompletionRequest | CompletionRequest | EmbeddingRequest


def rpc_queue(prefix: str, model: str) -> str:
    return f"{prefix}.rpc.{model}"


A = TypeVar("A", bound=Answer)


class Reply(TypedDict, total=False):
    """A worker's reply message: an answer's ``result``, a stream's ``chunk`` (then ``end``),
    or an ``error`` (the OpenAI error object) with its HTTP ``status``."""

    result: JsonObject
    chunk: Chunk
    end: bool
    error: ErrorObject | JsonObject  # as sent; as received, whatever JSON the worker sent
    status: int


class RemoteFailure(InferdError):
    """An error a worker reported for a request, with the worker's status and type."""

    def __init__(self, error: ErrorObject | JsonObject, status: int) -> None:
        param, code = error.get("param"), error.get("code")
        super().__init__(str(error.get("message") or "The worker failed."),
                         param=param if isinstance(param, str) else None,
                         code=code if isinstance(code, str) else None)
        self.status = status
        self.type = str(error.get("type") or "server_error")


class RpcClient:
    """One robust connection and reply queue per process, shared by every queue replica."""

    def __init__(self, url: str, prefix: str) -> None:
        self.url, self.prefix = url, prefix
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self._reply_to = ""
        self._waiting: dict[str, asyncio.Queue[Reply]] = {}
        self._declared: set[str] = set()
        self._lock = asyncio.Lock()

    async def _connect(self) -> AbstractRobustChannel:
        async with self._lock:
            if self._channel is None:
                self._connection = await aio_pika.connect_robust(self.url, timeout=10,
                                                                 reconnect_interval=1)
                self._channel = await self._connection.channel()
                replies = await self._channel.declare_queue(exclusive=True, auto_delete=True)
                self._reply_to = replies.name
                await replies.consume(self._received, no_ack=True)
            return self._channel

    async def _received(self, message: AbstractIncomingMessage) -> None:
        inbox = self._waiting.get(message.correlation_id or "")
        if inbox is not None:
            inbox.put_nowait(orjson.loads(message.body))

    async def call(self, model: str, op: str, request: Request,
                   wait_seconds: float) -> AsyncIterator[Reply]:
        """Send one request; yield the worker's reply messages until the last one."""
        channel = await self._connect()
        if model not in self._declared:
            # the queue outlives its workers: a request sent while none runs waits in it
            # (and the autoscaler sees it) instead of being dropped by the broker
            await channel.declare_queue(rpc_queue(self.prefix, model), durable=True)
            self._declared.add(model)
        correlation = uuid.uuid4().hex
        inbox: asyncio.Queue[Reply] = asyncio.Queue()
        self._waiting[correlation] = inbox
        try:
            body = orjson.dumps({"op": op, "request": request.model_dump(mode="json")})
            # the attempt's traceparent, when traced
            trace: dict[str, FieldValue] = {**outgoing()}
            await channel.default_exchange.publish(
                aio_pika.Message(body, correlation_id=correlation, reply_to=self._reply_to,
                                 expiration=wait_seconds, headers=trace or None),
                routing_key=rpc_queue(self.prefix, model))
            while True:
                try:
                    reply = await asyncio.wait_for(inbox.get(), wait_seconds)
                except TimeoutError:
                    raise UpstreamTimeout(f"No worker of '{model}' answered within "
                                          f"{wait_seconds:g} s.") from None
                if "error" in reply:
                    raise RemoteFailure(reply["error"], int(reply.get("status", 502)))
                if reply.get("end"):
                    return
                yield reply
        finally:
            self._waiting.pop(correlation, None)

    async def close(self) -> None:
        if self._connection is not None:
            await bounded(self._connection.close(), 5, "closing the RPC connection")
        self._connection = self._channel = None


class QueueEngine(Engine):
    """A replica that is "whichever worker hosting the model takes the request"."""

    kind = "queue"
    capabilities = frozenset({"chat", "completions", "embeddings"})

    def __init__(self, name: str, client: RpcClient, model: str, timeout: float) -> None:
        super().__init__(name)
        self.client, self.model, self.timeout = client, model or name, timeout

    async def _one(self, op: str, request: Request, kind: type[A]) -> A:
        """The worker's answer to ``op``, validated as ``kind`` (as it built it)."""
        result: A | None = None
        async for reply in self.client.call(self.model, op, request, self.timeout):
            if "result" in reply:
                try:
                    result = kind.model_validate(reply["result"])
                except ValidationError:
                    raise UpstreamError(f"The worker of '{self.name}' sent a malformed "
                                        "answer.") from None
        if result is None:
            raise UpstreamError(f"The worker of '{self.name}' sent no answer.")
        return result

    async def _stream(self, op: str, request: Request) -> AsyncIterator[Chunk]:
        async for reply in self.client.call(self.model, op, request, self.timeout):
            if "chunk" in reply:
                yield reply["chunk"].copy()

    async def chat(self, request: ChatCompletionRequest) -> ChatCompletion:
        return await self._one("chat", request, ChatCompletion)

    def chat_stream(self, request: ChatCompletionRequest) -> AsyncIterator[Chunk]:
        return self._stream("chat_stream", request)

    async def complete(self, request: CompletionRequest) -> TextCompletion:
        return await self._one("complete", request, TextCompletion)

    def complete_stream(self, request: CompletionRequest) -> AsyncIterator[Chunk]:
        return self._stream("complete_stream", request)

    async def embed(self, request: EmbeddingRequest) -> EmbeddingList:
        return await self._one("embed", request, EmbeddingList)


class RpcServer:
    """The worker's side: answer ``<prefix>.rpc.<model>`` for the models it hosts."""

    def __init__(self, url: str, prefix: str, engines: dict[str, Engine],
                 prefetch: int, tracer: Tracer | None = None) -> None:
        self.url, self.prefix, self.engines, self.prefetch = url, prefix, engines, prefetch
        self.tracer = tracer
        self._connection: AbstractRobustConnection | None = None
        self._replies: AbstractRobustChannel | None = None
        self._running: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._connection = await aio_pika.connect_robust(self.url, timeout=10,
                                                         reconnect_interval=1)
        self._replies = await self._connection.channel()
        channel = await self._connection.channel()
        await channel.set_qos(prefetch_count=max(1, self.prefetch))
        for model in self.engines:
            queue = await channel.declare_queue(rpc_queue(self.prefix, model), durable=True)
            await queue.consume(self._received)

    async def _received(self, message: AbstractIncomingMessage) -> None:
        task = asyncio.create_task(self._answer(message))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _answer(self, message: AbstractIncomingMessage) -> None:
        if self.tracer is None:
            await self._run(message)
            return
        model = rpc_model(self.prefix, message.routing_key or "")
        span = self.tracer.start_span(f"answer {model}", context=received(message.headers),
                                      kind=SpanKind.SERVER, attributes={
                                          "gen_ai.request.model": model,
                                          "messaging.system": "rabbitmq"})
        token = attach(with_tracer(self.tracer, span))
        try:
            await self._run(message)
        finally:
            detach(token)
            span.end()

    async def _run(self, message: AbstractIncomingMessage) -> None:
        async with message.process(ignore_processed=True):
            channel = self._replies
            assert channel is not None
            try:
                data = orjson.loads(message.body)
                model = rpc_model(self.prefix, message.routing_key or "")
                async for reply in run(self.engines[model], str(data["op"]), data["request"]):
                    await _reply(channel, message, reply)
            except InferdError as exc:
                await _reply(channel, message, {"error": exc.to_dict(), "status": exc.status})
            except Exception:
                log.exception("a queued request failed")
                await _reply(channel, message, {"status": 500, "error": {
                    "message": "The worker had an error while processing the request.",
                    "type": "server_error", "param": None, "code": "internal_error"}})

    async def close(self) -> None:
        await cancel_and_wait(list(self._running), what="queued requests")
        if self._connection is not None:
            await bounded(self._connection.close(), 5, "closing the RPC connection")


def rpc_model(prefix: str, routing_key: str) -> str:
    return routing_key.removeprefix(f"{prefix}.rpc.")


async def run(engine: Engine, op: str, body: JsonObject) -> AsyncIterator[Reply]:
    """Run one request on a local engine: its reply messages, the last one included."""
    if op in ("chat", "chat_stream"):
        chat = ChatCompletionRequest.model_validate(body)
        if op == "chat":
            yield {"result": (await engine.chat(chat)).wire()}
        else:
            async for chunk in engine.chat_stream(chat):
                yield {"chunk": chunk}
    elif op in ("complete", "complete_stream"):
        text = CompletionRequest.model_validate(body)
        if op == "complete":
            yield {"result": (await engine.complete(text)).wire()}
        else:
            async for chunk in engine.complete_stream(text):
                yield {"chunk": chunk}
    elif op == "embed":
        yield {"result": (await engine.embed(EmbeddingRequest.model_validate(body))).wire()}
    else:
        raise UpstreamError(f"Unknown queued operation {op!r}.")
    yield {"end": True}


async def _reply(channel: AbstractRobustChannel, request: AbstractIncomingMessage,
                 reply: Reply) -> None:
    if not request.reply_to:
        return
    await channel.default_exchange.publish(
        aio_pika.Message(orjson.dumps(reply), correlation_id=request.correlation_id),
        routing_key=request.reply_to)
