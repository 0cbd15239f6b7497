"""An ``inferd worker`` as one of the queued generate system's workers: it consumes that
system's task queue (``INFERD_QUEUED_GENERATE_QUEUE``, the system's ``QUEUE_NAME``) and writes
status and answer records to its Redis as the system's own workers do
(``inferd.engines.queued_generate`` describes the protocol), running each task on this worker's
local engines. The system's backend, and its clients, see no difference.

A task is acknowledged once its final record is written: a worker killed mid-task leaves the
message to the broker, which hands it to another worker. A redelivered task whose status record
is already final is acknowledged without running again, so its answer is never written twice.
The answer is written before the final status, and that status is announced again shortly
after, so the system's backend (which reads the answer as soon as it sees the status, and reads
the status once before subscribing to its announcements) never misses it.
A task naming a model this worker does not host runs on its default model
(``INFERD_QUEUED_GENERATE_MODEL``, else the first chat model), as the system's workers serve
one model whatever the task names.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

import aio_pika
import orjson
import redis.asyncio as aioredis
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from pydantic import ValidationError
from redis.exceptions import RedisError

from inferd.engines.base import Engine
from inferd.engines.queued_generate import (
    CHAT,
    MAX_PRIORITY,
    SINGLE,
    TERMINAL,
    Keys,
    Meta,
    Prompt,
    Records,
)
from inferd.errors import InferdError
from inferd.jsontypes import JsonObject, JsonValue
from inferd.schemas.openai import ChatCompletionRequest, CompletionRequest
from inferd.tasks import bounded, cancel_and_wait

log = logging.getLogger("inferd.engines.queued_generate")

MAX_STOPS = 4  # stop sequences an OpenAI request may carry
REDIS_RETRY_SECONDS = 1.0  # a task whose records cannot be written goes back after this
REANNOUNCE_SECONDS = (0.05, 0.5)  # the final status is announced again after these pauses


class Malformed(Exception):
    """A message that is not a task of the protocol."""


class TaskServer:
    """Consumes the system's task queue and answers each task through Redis."""

    def __init__(self, broker_url: str, redis_url: str, queue: str, keys: Keys,
                 engines: dict[str, Engine], model: str = "", prefetch: int = 1) -> None:
        self.broker_url, self.redis_url, self.queue = broker_url, redis_url, queue
        self.keys, self.engines, self.prefetch = keys, engines, max(1, prefetch)
        chat = [name for name, e in engines.items() if "chat" in e.info().capabilities]
        self.model = model or (chat[0] if chat else next(iter(engines), ""))
        if self.model not in engines:
            raise ValueError(f"queued generate tasks: model {self.model!r} is not hosted here "
                             f"(hosted: {', '.join(engines) or 'none'})")
        self._connection: AbstractRobustConnection | None = None
        self._redis: aioredis.Redis | None = None
        self._running: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._redis = aioredis.Redis.from_url(self.redis_url, socket_connect_timeout=5,
                                              socket_timeout=30)
        self._connection = await aio_pika.connect_robust(self.broker_url, timeout=10,
                                                         reconnect_interval=1)
        channel = await self._connection.channel()
        await channel.set_qos(prefetch_count=self.prefetch)
        # declared as the system's workers declare it
        queue = await channel.declare_queue(self.queue, durable=True,
                                            arguments={"x-max-priority": MAX_PRIORITY})
        await queue.consume(self._received)
        log.info("consuming queued generate tasks of %s with model %s", self.queue, self.model)

    async def close(self) -> None:
        await cancel_and_wait(list(self._running), what="queued generate tasks")
        if self._connection is not None:
            await bounded(self._connection.close(), 5, "closing the task queue connection")
            self._connection = None
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    async def _received(self, message: AbstractIncomingMessage) -> None:
        self._later(self._handle(message))

    async def _handle(self, message: AbstractIncomingMessage) -> None:
        assert self._redis is not None
        records = Records(self._redis, self.keys)
        try:
            prompt_type, prompt, job_id = parse(message.body)
        except Malformed as exc:
            log.warning("dropped a message of %s that is not a task: %s", self.queue, exc)
            await message.reject(requeue=False)
            return
        try:
            record = await records.status(job_id)
            if message.redelivered and record is not None and record.get("status") in TERMINAL:
                log.info("task %s redelivered after it finished: not run again", job_id)
                await message.ack()
                return
            await records.set_status(job_id, "in_progress", "working")
            try:
                text = await self.run(prompt_type, prompt)
            except InferdError as exc:
                kind = "ValidationError" if exc.status in (400, 413, 422) else "Exception"
                await records.fail(job_id, kind, exc.message)
            except (ValidationError, ValueError, KeyError, TypeError) as exc:
                await records.fail(job_id, "ValidationError", str(exc)[:1000])
            except Exception:
                log.exception("queued generate task %s failed", job_id)
                await records.fail(job_id, "Exception",
                                   "The worker had an error while processing the task.")
            else:
                await records.complete(job_id, text)
            self._later(self._announce_again(records, job_id))
        except RedisError as exc:
            # the records cannot be written: the task goes back to the queue for a worker
            # that can write them (this one too, once Redis is back)
            log.warning("task %s: Redis: %s; handed back", job_id, exc)
            await asyncio.sleep(REDIS_RETRY_SECONDS)
            await message.nack(requeue=True)
            return
        await message.ack()

    def _later(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _announce_again(self, records: Records, job_id: str) -> None:
        """The system's backend reads the status once, then subscribes to its announcements:
        a task finished in between would be waited for until its timeout. Announcing the
        final status again a little later reaches it."""
        key = self.keys.status(job_id)
        for delay in REANNOUNCE_SECONDS:
            await asyncio.sleep(delay)
            with contextlib.suppress(RedisError):
                await records.redis.publish(key, "set")

    def _engine(self, meta: Meta) -> tuple[str, Engine]:
        name = meta.get("model")
        if isinstance(name, str) and name in self.engines:
            return name, self.engines[name]
        return self.model, self.engines[self.model]

    async def run(self, prompt_type: str, prompt: Prompt) -> str:
        """One task on the local engine: its generated text."""
        meta = prompt.get("meta") or {}
        name, engine = self._engine(meta)
        settings: JsonObject = {"model": name}  # the request, validated below
        if meta.get("temperature") is not None:
            settings["temperature"] = meta["temperature"]
        limit = meta.get("tokens_limit")
        size = engine.info().context_length
        if isinstance(limit, int) and limit > 0 and (size is None or limit < size):
            settings["max_tokens"] = limit
        stops: list[JsonValue] = [s for s in meta.get("stop_words") or []
                                  if isinstance(s, str) and s]
        if stops:
            settings["stop"] = stops[:MAX_STOPS]
        if prompt_type == SINGLE:
            text = CompletionRequest.model_validate({**settings, "prompt": prompt["content"]})
            completion = await engine.complete(text)
            return completion.choices[0].text if completion.choices else ""
        messages = [{"role": m["role"] if m["role"] in ("system", "user", "assistant")
                     else "user", "content": m["content"]} for m in prompt["messages"]]
        chat = ChatCompletionRequest.model_validate({**settings, "messages": messages})
        return (await engine.chat(chat)).text()


def parse(body: bytes) -> tuple[str, Prompt, str]:
    """(prompt type, prompt, job id) of a task message."""
    try:
        envelope = orjson.loads(body)
        kwargs = envelope["kwargs"]
        prompt_type = kwargs["prompt_type"]
        # the shape the system's backend writes, taken as it is: ``run`` fails a task whose
        # prompt lacks what it reads
        prompt: Prompt = kwargs["prompt"]
        job_id = str(prompt["job_id"])
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise Malformed(f"{type(exc).__name__}: {exc}"[:200]) from exc
    if prompt_type not in (CHAT, SINGLE) or not isinstance(prompt, dict) or not job_id:
        raise Malformed(f"prompt_type {prompt_type!r}")
    return prompt_type, prompt, job_id
