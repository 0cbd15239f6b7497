"""The ``queued_generate`` replica kind: the queued generate system's own workers ("LLM-core",
its ``LLMWrap``) serve a model, spoken to in that system's worker protocol.

The protocol, as its backend and workers speak it:

- a task is a persistent RabbitMQ message on the default exchange to ``QUEUE_NAME`` (declared
  durable with ``x-max-priority`` 5 by the workers), with the message priority of the task::

      {"type": "task", "task": "generate", "args": [], "id": JOB_ID, "retries": 0, "eta": null,
       "kwargs": {"prompt_type": "chat_completion",
                  "prompt": {"job_id": JOB_ID, "priority": 1, "source": "local",
                             "meta": {"temperature", "tokens_limit", "stop_words", "model"},
                             "messages": [{"role", "content"}, ...]}}}

  (``prompt_type`` ``single_generation`` carries ``content`` instead of ``messages``);
- before publishing, the sender writes the job's status record ``<status prefix>:JOB_ID``
  (``job-status`` by default) as ``pending`` and the prompt as ``prompt:JOB_ID``; a worker
  sets it ``in_progress`` and finally ``completed`` (with the answer ``{"result": TEXT}`` at
  ``<answer prefix>:JOB_ID``, ``job-answer`` by default) or ``error`` (with
  ``{"type", "msg"}``). Every status write is announced on the Redis channel named like the
  key (message ``set``).

A replica publishes each request as a task and waits for its status record (woken by the
channel, and reading the record at least every second, so a lost announcement or a Redis
restart only delays it). A request of an inferd job gets a task id derived from the job: when
the job runs again (its worker restarted), a task already answered is collected, and one still
queued is waited for, instead of being published twice; one whose record was written but whose
message the broker never confirmed (the process died in between) is published then. The
replica's ``timeout`` bounds the wait: a task no worker answers fails with a 504 naming it,
and the router may try another replica or model.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, NotRequired, TypedDict
from urllib.parse import quote, urlsplit

import aio_pika
import orjson
import redis.asyncio as aioredis
from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection
from redis.exceptions import RedisError

from inferd.engines.base import Chunk, ModelInfo
from inferd.engines.remote import RemoteEngine, RemoteSpec
from inferd.errors import (
    InferdError,
    InvalidRequest,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from inferd.jsontypes import JsonObject, JsonValue
from inferd.logs import job_deadline_var, job_id_var
from inferd.schemas.answers import ChatCompletion, CompletionChoice, TextCompletion, Usage
from inferd.schemas.openai import (
    ChatCompletionRequest,
    CompletionRequest,
    NonTextContent,
    chat_chunk,
    chat_completion,
    message_chars,
    usage_chunk,
)
from inferd.tasks import bounded

log = logging.getLogger("inferd.engines.queued_generate")

DEFAULT_QUEUE = "llm-api-queue"
STATUS_PREFIX = "job-status"
ANSWER_PREFIX = "job-answer"
PROMPT_PREFIX = "prompt"
PUBLISHED_PREFIX = "inferd-published"  # inferd's own: a job's task whose publish was confirmed
MAX_PRIORITY = 5  # the workers declare their queue with this x-max-priority
BASE_PRIORITY = 1  # the backend's priority of a task that names none
DEFAULT_TOKENS_LIMIT = 8096  # the system's default meta.tokens_limit
TERMINAL = ("completed", "error")
POLL_SECONDS = 1.0  # the status record is read at least this often while waiting
ANSWER_POLL_SECONDS = 0.005  # how often an answer that follows its status is looked for
ANSWER_GRACE_SECONDS = 2.0  # for this long; then as often as the status

CHAT = "chat_completion"
SINGLE = "single_generation"


def now_text() -> str:
    """The system's ``last_update`` format (local time, seconds)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime())


def status_record(status: str, message: str | None, error: dict[str, str] | None = None
                  ) -> bytes:
    """A status record as the system's workers and backend read it."""
    return orjson.dumps({"status": status, "last_update": now_text(), "status_message": message,
                         "is_completed": status in TERMINAL, "error": error})


class Meta(TypedDict, total=False):
    """A task's generation settings (the system's workers read what is there)."""

    temperature: float
    tokens_limit: int
    stop_words: list[str] | None
    model: str | None  # which of a worker's models; None: its own


class PromptMessage(TypedDict):
    role: str  # system, user or assistant
    content: str


class Prompt(TypedDict):
    """A task's prompt record: a chat's ``messages`` (``chat_completion``), or one text's
    ``content`` (``single_generation``)."""

    job_id: str
    priority: NotRequired[int]
    source: NotRequired[str]
    meta: NotRequired[Meta]
    messages: NotRequired[list[PromptMessage]]
    content: NotRequired[str]


class TaskArguments(TypedDict):
    prompt: Prompt
    prompt_type: str


class TaskMessage(TypedDict):
    """The envelope of a task on the queue."""

    type: str
    task: str
    args: list[JsonValue]
    kwargs: TaskArguments
    id: str
    retries: int
    eta: None


def task_message(job_id: str, prompt_type: str, prompt: Prompt) -> TaskMessage:
    """The envelope the system's backend publishes."""
    return {"type": "task", "task": "generate", "args": [],
            "kwargs": {"prompt": prompt, "prompt_type": prompt_type},
            "id": job_id, "retries": 0, "eta": None}


@dataclass(frozen=True)
class Keys:
    """Where the records of one deployment live in Redis."""

    status_prefix: str = STATUS_PREFIX
    answer_prefix: str = ANSWER_PREFIX

    def status(self, job_id: str) -> str:
        return f"{self.status_prefix}:{job_id}"

    def answer(self, job_id: str) -> str:
        return f"{self.answer_prefix}:{job_id}"

    @staticmethod
    def prompt(job_id: str) -> str:
        return f"{PROMPT_PREFIX}:{job_id}"

    @staticmethod
    def published(job_id: str) -> str:
        """inferd's own mark: the broker confirmed this task's message (the system's records
        say nothing of it)."""
        return f"{PUBLISHED_PREFIX}:{job_id}"


class Records:
    """The status, prompt and answer records of tasks, in the system's Redis format."""

    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self.redis, self.keys = client, keys

    async def status(self, job_id: str) -> JsonObject | None:
        raw = await self.redis.get(self.keys.status(job_id))
        if raw is None:
            return None
        try:
            record = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        return record if isinstance(record, dict) else None

    async def set_status(self, job_id: str, status: str, message: str | None,
                         error: dict[str, str] | None = None, *, only_new: bool = False,
                         before: tuple[str, bytes] | None = None) -> bool:
        """Write the status record (``only_new``: unless one exists) and announce it, in one
        round trip; ``before``: a (key, value) written first, in the same round trip."""
        key = self.keys.status(job_id)
        record = status_record(status, message, error)
        if only_new:
            written = await self.redis.set(key, record, nx=True)
            if written:
                await self.redis.publish(key, "set")
            return bool(written)
        async with self.redis.pipeline(transaction=False) as pipe:
            if before is not None:
                pipe.set(*before)
            pipe.set(key, record)
            pipe.publish(key, "set")
            await pipe.execute()
        return True

    async def create(self, job_id: str, prompt: Prompt) -> None:
        """A new task's records, as the backend writes them before publishing it."""
        await self.set_status(job_id, "pending", "Job is created",
                              before=(self.keys.prompt(job_id), orjson.dumps(prompt)))

    async def answer(self, job_id: str) -> str | None:
        raw = await self.redis.get(self.keys.answer(job_id))
        if raw is None:
            return None
        try:
            record = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        result = record.get("result") if isinstance(record, dict) else None
        return "" if result is None and isinstance(record, dict) else result

    async def complete(self, job_id: str, result: str) -> None:
        """The answer, then the status: a reader that sees ``completed`` finds the answer."""
        await self.set_status(job_id, "completed", None, before=(
            self.keys.answer(job_id), orjson.dumps({"result": result})))

    async def fail(self, job_id: str, kind: str, message: str) -> None:
        await self.set_status(job_id, "error", None, {"type": kind, "msg": message})


def redis_url_of(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise InvalidRequest(f"options.redis_url '{url}' must be a redis:// URL with a host.",
                             param="options.redis_url")
    return url


def broker_url_of(url: str, credential: str) -> str:
    """The AMQP URL to connect to: the replica URL (``amqp://host:port[/vhost]``) with the
    credential ``login:password`` (the replica's ``api_key``; default ``guest:guest``)."""
    parts = urlsplit(url)
    if parts.scheme not in ("amqp", "amqps") or not parts.hostname:
        raise InvalidRequest(f"A queued_generate replica URL must be an amqp:// URL with a host, "
                             f"not '{url}'.", param="url")
    login, _, password = (credential or "guest:guest").partition(":")
    netloc = f"{quote(login, safe='')}:{quote(password, safe='')}@{parts.netloc}"
    return parts._replace(netloc=netloc).geturl()


def _messages(request: ChatCompletionRequest) -> list[PromptMessage]:
    messages: list[PromptMessage] = []
    for index, message in enumerate(request.messages):
        try:
            text = message.text()
        except NonTextContent as exc:
            raise InvalidRequest(f"messages[{index}]: {exc} by this model's workers.",
                                 param=f"messages[{index}].content") from exc
        role = message.role if message.role in ("system", "user", "assistant") else "user"
        messages.append({"role": role, "content": text})
    return messages


def _stops(stop: str | list[str] | None) -> list[str] | None:
    if stop is None:
        return None
    stops = [stop] if isinstance(stop, str) else list(stop)
    return [s for s in stops if s] or None


class QueuedGenerateEngine(RemoteEngine):
    """Publishes requests as the queued generate system's tasks; reads the answers from Redis.

    Options: ``queue`` (``QUEUE_NAME``, default ``llm-api-queue``), ``redis_url``,
    ``status_prefix`` / ``answer_prefix`` (``REDIS_PREFIX_FOR_STATUS`` /
    ``REDIS_PREFIX_FOR_ANSWER``), ``priority`` (of the tasks, default 1), ``max_priority`` (the
    queue's ``x-max-priority`` as the workers declare it, default 5; 0: not declared here).
    """

    kind = "queued_generate"
    capabilities = frozenset({"chat", "completions"})

    def __init__(self, name: str, spec: RemoteSpec) -> None:
        super().__init__(name, spec)
        options = spec.options
        self.broker_url = broker_url_of(spec.url, spec.api_key)
        self.redis_url = redis_url_of(str(options.get("redis_url") or "redis://localhost:6379/0"))
        self.queue = str(options.get("queue") or DEFAULT_QUEUE)
        self.keys = Keys(str(options.get("status_prefix") or STATUS_PREFIX),
                         str(options.get("answer_prefix") or ANSWER_PREFIX))
        self.priority = int(options.get("priority", BASE_PRIORITY))
        self.max_priority = int(options.get("max_priority", MAX_PRIORITY))
        self._redis: aioredis.Redis | None = None
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self._lock = asyncio.Lock()

    @property
    def what(self) -> str:
        return f"The queued generate workers of '{self.name}' (queue '{self.queue}')"

    def info(self) -> ModelInfo:
        return ModelInfo(name=self.name, kind=self.kind, capabilities=self.capabilities)

    async def start(self) -> None:
        # no I/O here: a broker or Redis that is down makes the replica unhealthy, not the
        # process fail to start
        self._redis = aioredis.Redis.from_url(self.redis_url, socket_connect_timeout=5,
                                              socket_timeout=10)

    async def close(self) -> None:
        if self._connection is not None:
            await bounded(self._connection.close(), 5, "closing the queued generate connection")
        self._connection = self._channel = None
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    @property
    def records(self) -> Records:
        if self._redis is None:
            raise UpstreamUnavailable(f"The replica of '{self.name}' is not started.")
        return Records(self._redis, self.keys)

    async def _channel_open(self) -> AbstractRobustChannel:
        async with self._lock:
            if self._channel is None:
                try:
                    connection = await aio_pika.connect_robust(self.broker_url, timeout=10,
                                                               reconnect_interval=1)
                except (OSError, aio_pika.exceptions.AMQPError) as exc:
                    raise UpstreamUnavailable(f"{self.what}: the broker could not be reached "
                                              f"({type(exc).__name__}).") from exc
                channel = await connection.channel(publisher_confirms=True)
                if self.max_priority:
                    # as the workers declare it, so a task sent before any worker started
                    # waits in the queue instead of being dropped
                    try:
                        await channel.declare_queue(
                            self.queue, durable=True,
                            arguments={"x-max-priority": self.max_priority})
                    except aio_pika.exceptions.ChannelPreconditionFailed:
                        log.warning("queue %s exists with other arguments; using it as it is",
                                    self.queue)
                        channel = await connection.channel(publisher_confirms=True)
                self._connection, self._channel = connection, channel
            return self._channel

    async def probe(self) -> None:
        try:
            await self.records.redis.ping()
        except RedisError as exc:
            raise UpstreamUnavailable(f"{self.what}: Redis could not be reached "
                                      f"({type(exc).__name__}).") from exc
        await self._channel_open()

    # -- a task -----------------------------------------------------------------------------
    def _task_id(self) -> str:
        job = job_id_var.get()
        if not job:
            return uuid.uuid4().hex
        where = hashlib.sha256(f"{self.spec.url}|{self.queue}".encode()).hexdigest()[:8]
        return f"inferd-{job}-{where}"

    async def _run(self, prompt_type: str, prompt: Prompt) -> tuple[str, str]:
        """Publish the task (unless this job's task is already there) and wait for its answer:
        (task id, text)."""
        job_id = str(prompt["job_id"])
        records = self.records
        try:
            existing = await records.status(job_id) if job_id.startswith("inferd-") else None
        except RedisError as exc:
            raise UpstreamUnavailable(f"{self.what}: Redis could not be reached "
                                      f"({type(exc).__name__}).") from exc
        if existing is None or existing.get("status") == "error" or (
                existing.get("status") == "pending" and not await self._was_published(job_id)):
            # a pending record without the broker's confirmation: the process that wrote it
            # died before its message was confirmed, which may never have reached the queue
            await self._publish(job_id, prompt_type, prompt)
        else:
            log.info("task %s is already %s: waiting for it", job_id, existing.get("status"))
        return job_id, await self._wait(job_id, prompt)

    async def _publish(self, job_id: str, prompt_type: str, prompt: Prompt) -> None:
        channel = await self._channel_open()
        try:
            await self.records.create(job_id, prompt)
        except RedisError as exc:
            raise UpstreamUnavailable(f"{self.what}: Redis could not be reached "
                                      f"({type(exc).__name__}).") from exc
        message = aio_pika.Message(orjson.dumps(task_message(job_id, prompt_type, prompt)),
                                   priority=int(prompt.get("priority") or 0),
                                   delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
        try:
            await channel.default_exchange.publish(message, routing_key=self.queue, timeout=10)
        except (OSError, TimeoutError, aio_pika.exceptions.AMQPError) as exc:
            raise UpstreamUnavailable(f"{self.what}: the task could not be published "
                                      f"({type(exc).__name__}).") from exc
        if job_id.startswith("inferd-"):  # a job's task, which may run again
            try:
                await self.records.redis.set(Keys.published(job_id), b"1")
            except RedisError as exc:  # then a run again publishes it once more
                log.warning("task %s: its publish mark was not written: %s", job_id, exc)

    async def _was_published(self, job_id: str) -> bool:
        try:
            return bool(await self.records.redis.exists(Keys.published(job_id)))
        except RedisError as exc:
            raise UpstreamUnavailable(f"{self.what}: Redis could not be reached "
                                      f"({type(exc).__name__}).") from exc

    async def _wait(self, job_id: str, prompt: Prompt) -> str:
        """The task's answer once its status record says it is done."""
        records = self.records
        key = self.keys.status(job_id)
        deadline = time.monotonic() + self.spec.timeout
        why = f"within {self.spec.timeout:g} s"
        job_deadline = job_deadline_var.get()
        if job_deadline is not None and job_deadline - time.time() < self.spec.timeout:
            deadline = time.monotonic() + (job_deadline - time.time())
            why = "before the job's deadline"
        pubsub: Any = None
        missing: float | None = None  # since when the status says completed without an answer
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise UpstreamTimeout(f"{self.what} did not answer task {job_id} {why}.")
                try:
                    if pubsub is None:
                        pubsub = records.redis.pubsub()
                        await pubsub.subscribe(key)
                    record = await records.status(job_id)
                    if record is None:
                        # Redis lost it (restarted without persistence): written again, so a
                        # worker that takes the task finds the record it updates
                        await records.redis.set(Keys.prompt(job_id), orjson.dumps(prompt))
                        await records.set_status(job_id, "pending", "Job is created",
                                                 only_new=True)
                    elif record.get("status") == "completed":
                        answer = await records.answer(job_id)
                        if answer is not None:
                            return answer
                        # the system's workers write the answer just after the status,
                        # without announcing it (a worker that died in between leaves the
                        # task to another, which answers it again: read less often then)
                        missing = missing if missing is not None else time.monotonic()
                        if time.monotonic() - missing < ANSWER_GRACE_SECONDS:
                            await asyncio.sleep(ANSWER_POLL_SECONDS)
                            continue
                    elif record.get("status") == "error":
                        raise self._failure(job_id, record.get("error"))
                    await pubsub.get_message(ignore_subscribe_messages=True,
                                             timeout=min(POLL_SECONDS, left))
                except RedisError as exc:
                    log.warning("waiting for task %s: Redis: %s", job_id, exc)
                    if pubsub is not None:
                        await _close_pubsub(pubsub)
                        pubsub = None
                    await asyncio.sleep(min(POLL_SECONDS, max(0.0, left)))
        finally:
            if pubsub is not None:
                await _close_pubsub(pubsub)

    def _failure(self, job_id: str, error: Any) -> InferdError:
        error = error if isinstance(error, dict) else {}
        kind, message = str(error.get("type") or "Exception"), str(error.get("msg") or "")
        if kind == "ValidationError":
            return InvalidRequest(f"{self.what} refused task {job_id}: {message}",
                                  code="upstream_rejected")
        return UpstreamError(f"{self.what} failed task {job_id}: {kind}: {message}"[:1000])

    def _meta(self, temperature: float | None, limit: int | None,
              stop: str | list[str] | None) -> Meta:
        return {"temperature": 0.2 if temperature is None else temperature,
                "tokens_limit": limit or DEFAULT_TOKENS_LIMIT, "stop_words": _stops(stop),
                "model": self.spec.upstream_model or None}

    # -- the engine interface -----------------------------------------------------------------
    async def chat(self, request: ChatCompletionRequest) -> ChatCompletion:
        messages = _messages(request)
        prompt: Prompt = {
            "job_id": self._task_id(), "priority": self.priority, "source": "local",
            "meta": self._meta(request.temperature, request.token_limit(), request.stop),
            "messages": messages}
        job_id, text = await self._run(CHAT, prompt)
        return chat_completion(id=f"chatcmpl-{job_id}", model=request.model, text=text,
                               finish_reason="stop",
                               prompt_tokens=message_chars(request) // 4 + 4 * len(messages),
                               completion_tokens=len(text) // 4 + 1)

    async def chat_stream(
            self, request: ChatCompletionRequest) -> AsyncIterator[Chunk]:
        """The whole answer as one chunk (the workers do not stream), then the usage."""
        answer = await self.chat(request)
        created, usage = answer.created, _usage(answer.usage)
        yield chat_chunk(id=answer.id, model=request.model, created=created,
                         delta={"role": "assistant", "content": answer.text()})
        yield chat_chunk(id=answer.id, model=request.model, created=created, delta={},
                         finish_reason="stop")
        yield usage_chunk(id=answer.id, model=request.model, created=created,
                          obj="chat.completion.chunk", prompt_tokens=usage.prompt_tokens,
                          completion_tokens=usage.completion_tokens or 0)

    async def complete(self, request: CompletionRequest) -> TextCompletion:
        prompts = request.prompts()
        if len(prompts) != 1 or not isinstance(prompts[0], str):
            raise InvalidRequest(f"The model '{self.name}' takes one text prompt per request.",
                                 param="prompt")
        prompt: Prompt = {
            "job_id": self._task_id(), "priority": self.priority,
            "meta": self._meta(request.temperature, request.token_limit(), request.stop),
            "content": prompts[0]}
        job_id, text = await self._run(SINGLE, prompt)
        return TextCompletion(
            id=f"cmpl-{job_id}", object="text_completion", created=int(time.time()),
            model=request.model,
            choices=[CompletionChoice(index=0, text=text, logprobs=None, finish_reason="stop")],
            usage=Usage.of(len(prompts[0]) // 4 + 1, len(text) // 4 + 1))

    async def complete_stream(
            self, request: CompletionRequest) -> AsyncIterator[Chunk]:
        answer = await self.complete(request)
        created, usage = answer.created, _usage(answer.usage)
        yield {"id": answer.id, "object": "text_completion", "created": created,
               "model": request.model, "choices": [{"index": 0, "text": answer.choices[0].text,
                                                    "logprobs": None, "finish_reason": "stop"}]}
        yield usage_chunk(id=answer.id, model=request.model, created=created,
                          obj="text_completion", prompt_tokens=usage.prompt_tokens,
                          completion_tokens=usage.completion_tokens or 0)


def _usage(usage: Usage | None) -> Usage:
    """The usage this engine put in its own answer."""
    assert usage is not None  # ``chat`` and ``complete`` above always count it
    return usage


async def _close_pubsub(pubsub: Any) -> None:
    with contextlib.suppress(RedisError, OSError):
        await bounded(pubsub.aclose(), 2, "closing a Redis subscription")

