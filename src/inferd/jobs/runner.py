"""Runs one job through ``Inference`` and turns what happens into an ``Outcome``.

Chat and text completions run as a stream so that tokens reach ``/v1/jobs/{id}/events`` while
they are generated; ``EventLog`` writes them in small batches (one write per
``event_flush_seconds`` at most), each with the next sequence number.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

import orjson
from opentelemetry.context import attach, detach
from pydantic import ValidationError

from inferd.anthropic import translate
from inferd.auth.principal import Principal
from inferd.errors import (
    ContextLengthExceeded,
    InferdError,
    InternalError,
    InvalidRequest,
    Overloaded,
    RateLimited,
    invalid_request,
)
from inferd.images import ImageService
from inferd.inference import Inference
from inferd.jobs.requests import MESSAGES, parse_request
from inferd.jsontypes import JsonObject
from inferd.responses import RESPONSES, background
from inferd.responses.conversations import ConversationService
from inferd.responses.events import Event
from inferd.responses.prompts import PromptService
from inferd.responses.service import ResponseService
from inferd.schemas.answers import Answer, ChatCompletion, TextCompletion
from inferd.schemas.fold import ChunkFold
from inferd.schemas.images import ImageGenerationRequest
from inferd.schemas.openai import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    StreamOptions,
    legacy_answer,
)
from inferd.schemas.responses import ResponseCreateRequest
from inferd.settings import LimitSettings
from inferd.store.conversations import ConversationStore, PromptStore
from inferd.store.db import Database
from inferd.store.jobs import FIRST_START_DATA, JobEvent, JobRecord, JobStore
from inferd.store.jobs import Outcome as Outcome  # where the workers know it from
from inferd.store.responses import ResponseStore
from inferd.tracing import TRACEPARENT, SpanKind, carried, failed, with_tracer

log = logging.getLogger("inferd.jobs")


# Stores one job's new events: (job id, events).
EventWriter = Callable[[tuple[str, list[JobEvent]]], Awaitable[None]]


class EventLog:
    """The event stream of one attempt: buffered token events with sequence numbers."""

    def __init__(self, store: JobStore, job_id: str, next_seq: int, flush_every: float,
                 notify: Callable[[str], None], write: EventWriter | None = None,
                 hold_last: bool = False) -> None:
        """``write``: how events reach the store (a worker's shares one multi-row insert
        among the jobs it runs at once); by default ``store.add_events``. ``hold_last``: the
        events still unwritten when the run ends (``last``) stay here for ``take``: a worker
        stores them with the outcome, in the same statement."""
        self.hold_last = hold_last
        self.store = store
        self.write: EventWriter = write or (lambda batch: store.add_events(*batch))
        self.job_id = job_id
        self.seq = next_seq
        self.flush_every = flush_every
        self.notify = notify
        self._pending: list[JobEvent] = []
        self._last_flush = time.monotonic()

    def _event(self, kind: str, data: JsonObject | Event) -> JobEvent:
        event = JobEvent(self.seq, kind, orjson.dumps(data).decode())
        self.seq += 1
        return event

    async def start(self, attempt: int, written: bool = False) -> None:
        """The first event of an attempt; a later attempt drops the earlier attempts' events.
        ``written``: the claim wrote it already (``Claimed.started``)."""
        first = self.seq
        if attempt == 1 and not written:
            event = JobEvent(self.seq, "status", FIRST_START_DATA)
            self.seq += 1
            await self.write((self.job_id, [event]))
        elif attempt > 1:
            await self.store.add_events(self.job_id, [self._event("reset", {
                "status": "running", "attempt": attempt})], replace_before=first)
        self.notify(self.job_id)

    async def token(self, text: str, index: int = 0) -> None:
        last = self._pending[-1] if self._pending else None
        if last is not None and last.kind == "token":
            data = orjson.loads(last.data)
            if data["index"] == index:
                data["text"] += text
                last.data = orjson.dumps(data).decode()
                await self._maybe_flush()
                return
        self._pending.append(self._event("token", {"index": index, "text": text}))
        await self._maybe_flush()

    async def add(self, kind: str, data: Event) -> None:
        """One event as it is (a Responses stream event), numbered in ``sequence_number``."""
        numbered = data.copy()
        numbered["sequence_number"] = self.seq
        self._pending.append(self._event(kind, numbered))
        await self._maybe_flush()

    async def progress(self, step: int, of: int) -> None:
        """One event per denoising step of an image generation."""
        self._pending.append(self._event("progress", {"step": step, "of": of}))
        await self._maybe_flush()

    async def _maybe_flush(self) -> None:
        if time.monotonic() - self._last_flush >= self.flush_every:
            await self.flush()

    async def last(self) -> None:
        """The run is over: write what is left, or with ``hold_last`` keep it for ``take``."""
        if not self.hold_last:
            await self.flush()

    def take(self) -> list[JobEvent]:
        """The events not written yet (they are the taker's to store now)."""
        events, self._pending = self._pending, []
        return events

    async def flush(self) -> None:
        self._last_flush = time.monotonic()
        if not self._pending:
            return
        events, self._pending = self._pending, []
        await self.write((self.job_id, events))
        self.notify(self.job_id)


def error_outcome(exc: Exception) -> Outcome:
    if isinstance(exc, RateLimited) and exc.code == "rate_limit_exceeded":
        # the key's per-minute limit: the job waits its turn instead of failing (a used-up
        # budget, code insufficient_quota, does fail)
        return Outcome("deferred", error=exc.to_dict(), status_code=429)
    if isinstance(exc, Overloaded):
        # the model stayed at capacity past the wait of a batch request: the job waits its
        # turn again later instead of failing
        return Outcome("deferred", error=exc.to_dict(), status_code=exc.status)
    if isinstance(exc, ValidationError):
        exc = invalid_request(exc.errors())
    if not isinstance(exc, InferdError):
        log.exception("job failed with an unexpected error")
        exc = InternalError("The server had an error while processing the job.")
    return Outcome("failed", error=exc.to_dict(), status_code=exc.status)


async def run_job(inference: Inference, job: JobRecord, owner: Awaitable[Principal],
                  events: EventLog, images: ImageService | None = None) -> Outcome:
    """Run ``job`` as ``owner`` to its outcome; errors (of the request, or a revoked key)
    become a ``failed`` outcome. Traced (``inference.tracer``), the run is a ``job
    {endpoint}`` span in the trace of the request that submitted the job."""
    tracer = inference.tracer
    if tracer is None:
        return await _run_job(inference, job, owner, events, images)
    span = tracer.start_span(
        f"job {job.endpoint}", context=carried((job.meta or {}).get(TRACEPARENT)),
        kind=SpanKind.CONSUMER, attributes={
            "inferd.job.id": job.id, "inferd.job.endpoint": job.endpoint,
            "inferd.job.attempt": job.attempts, "gen_ai.request.model": job.model})
    token = attach(with_tracer(tracer, span))
    try:
        outcome = await _run_job(inference, job, owner, events, images)
    except BaseException as exc:
        failed(span, exc)
        raise
    else:
        span.set_attribute("inferd.job.outcome", outcome.status)
        if outcome.status == "failed":
            failed(span, None, (outcome.error["code"] if outcome.error else None) or "failed")
        return outcome
    finally:
        detach(token)
        span.end()


async def _run_job(inference: Inference, job: JobRecord, owner: Awaitable[Principal],
                   events: EventLog, images: ImageService | None) -> Outcome:
    try:
        principal = await owner
        if job.source == "batch" and job.endpoint in (RESPONSES, MESSAGES):
            return await _run_batch_line(inference, job, principal, events.store.db)
        if job.endpoint == background.ENDPOINT:
            result, usage = await background.run_response(
                inference, background.ResponseJob.model_validate(job.request), principal, events,
                ResponseStore(events.store.db))
            return Outcome("completed", result=result, status_code=200, usage=_wire(usage))
        request = parse_request(job.endpoint, job.request)
        if isinstance(request, ImageGenerationRequest):
            assert images is not None
            pictures = await images.generate(request, principal, events.progress)
            await events.last()
            return Outcome("completed", result=pictures.wire(), status_code=200,
                           usage=_wire(pictures.usage))
        if isinstance(request, EmbeddingRequest):
            vectors = await inference.embed(request, principal)
            return Outcome("completed", result=vectors.wire(), status_code=200,
                           usage=_wire(vectors.usage))
        assert isinstance(request, ChatCompletionRequest | CompletionRequest)
        return await _run_stream(inference, request, principal, events)
    except (InferdError, ValidationError) as exc:
        await events.last()
        return error_outcome(exc)
    except Exception as exc:  # a bug must fail the job, not kill the worker
        await events.last()
        return error_outcome(exc)


async def _run_batch_line(inference: Inference, job: JobRecord, principal: Principal,
                          db: Database) -> Outcome:
    """A batch line of the Responses or the Anthropic Messages API: its answer is that API's
    object (a Response, a Message); ``usage`` is the chat usage it was made of."""
    if job.endpoint == RESPONSES:
        request = ResponseCreateRequest.model_validate(job.request)
        if request.background:
            raise InvalidRequest("A batch runs its requests in the background already; "
                                 "'background' must be false.", param="background")
        # a batch line is answered at once (not in the background), with the default bounds
        defaults = LimitSettings.model_fields
        responses = ResponseService(
            inference, ResponseStore(db), None,
            ConversationService(ConversationStore(db),
                                defaults["conversation_max_items"].default),
            PromptService(PromptStore(db)), defaults["responses_max_chain"].default)
        response = await responses.create(principal,
                                          await responses.prepare(principal, request))
        used = response.get("usage")
        usage = {"prompt_tokens": used.get("input_tokens", 0),
                 "completion_tokens": used.get("output_tokens", 0),
                 "total_tokens": used.get("total_tokens", 0)} \
            if isinstance(used, dict) and used else None
        return Outcome("completed", result=response, status_code=200, usage=usage)
    body = translate.MessagesRequest.model_validate(job.request)
    if body.stream:
        body = body.model_copy(update={"stream": False})
    chat = translate.to_chat(body)
    try:
        result = await inference.chat(chat, principal)
    except ContextLengthExceeded as exc:
        # Anthropic's max_tokens is a ceiling every client sends (as ``POST /v1/messages``)
        if exc.param != "max_tokens":
            raise
        chat.max_tokens = None
        result = await inference.chat(chat, principal)
    return Outcome("completed", result=translate.from_chat(result, body.model).wire(),
                   status_code=200, usage=_wire(result.usage))


async def _run_stream(inference: Inference, request: ChatCompletionRequest | CompletionRequest,
                      principal: Principal, events: EventLog) -> Outcome:
    streaming = request.model_copy(update={"stream": True,
                                           "stream_options": StreamOptions(include_usage=True)})
    fold = ChunkFold()
    if isinstance(streaming, ChatCompletionRequest):
        stream = await inference.chat_stream(streaming, principal)
    else:
        stream = await inference.complete_stream(streaming, principal)
    async for chunk in stream:
        fold.feed(chunk)
        for choice in chunk.get("choices") or []:
            text = (choice.get("delta") or {}).get("content") or choice.get("text") or ""
            if text:
                await events.token(text, choice.get("index", 0))
    await events.last()
    # the body a sync request answers: every choice, tool calls, logprobs, the engine's usage
    result: ChatCompletion | TextCompletion
    if isinstance(request, ChatCompletionRequest):
        result = fold.chat(request.model)
        if request.legacy_functions:  # the client sent ``functions``
            result = legacy_answer(result)
    else:
        result = fold.completion(request.model)
    return Outcome("completed", result=result.wire(), status_code=200, usage=_wire(result.usage))


def _wire(usage: Answer | None) -> JsonObject | None:
    """A usage as the job stores it (JSON)."""
    return None if usage is None else usage.wire()
