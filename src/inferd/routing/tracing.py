"""The router's spans, when it has a tracer (``inferd.tracing``).

``RouteTrace`` is one request's ``route {model}`` span and, under it, one span per attempt on a
replica (kind client, named ``{operation} {model}`` as GenAI's conventions name a call to a
model): which replica, the attempt's number (1 for the first, counted across fallbacks), its
outcome (``ok``; ``unavailable`` when it failed before its first byte: the router goes on to
another replica or fallback if it has one; ``failed``, ``cancelled``) and, for an answer in one
piece, its usage. A stream's spans end when the stream does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

from opentelemetry.context import attach, detach
from opentelemetry.trace import set_span_in_context
from opentelemetry.util.types import AttributeValue

from inferd.engines.base import Chunk
from inferd.engines.remote import UpstreamUnavailable
from inferd.routing.replica import Replica
from inferd.schemas.answers import (
    ChatCompletion,
    ImagesAnswer,
    RerankAnswer,
    Result,
    ScoreList,
    TextCompletion,
    finish_reasons,
    metered_usage,
)
from inferd.tracing import (
    SYSTEM,
    Span,
    SpanKind,
    Tracer,
    failed,
    usage_attributes,
    with_tracer,
)

T = TypeVar("T")

# GenAI's operation names (gen_ai.operation.name) of the requests that have one; the others
# are named by what they are (rerank, score, images, the path of a passed-through request).
OPERATIONS = {"ChatCompletionRequest": "chat", "CompletionRequest": "text_completion",
              "EmbeddingRequest": "embeddings", "ImageGenerationRequest": "images",
              "RerankRequest": "rerank", "ScoreRequest": "score"}


def operation_name(request: Any) -> str:
    """``gen_ai.operation.name`` of a request the router runs."""
    name = OPERATIONS.get(type(request).__name__)
    if name is None:  # a passed-through request (audio, moderations)
        name = str(getattr(request, "path", "request")).strip("/").replace("/", ".")
    return name


def answer_attributes(answer: Result) -> dict[str, AttributeValue]:
    """``gen_ai.response.*`` and ``gen_ai.usage.*`` of an answer in one piece."""
    usage = metered_usage(answer)
    out: dict[str, AttributeValue] = ({} if usage is None else {**usage_attributes(
        usage.prompt_tokens, usage.completion_tokens)})
    if not isinstance(answer, ImagesAnswer):
        out["gen_ai.response.model"] = answer.model
    if isinstance(answer, ChatCompletion | TextCompletion | RerankAnswer | ScoreList):
        out["gen_ai.response.id"] = answer.id
    reasons = finish_reasons(answer)
    if reasons:
        out["gen_ai.response.finish_reasons"] = reasons
    return out


class RouteTrace:
    """The spans of one request through the router."""

    def __init__(self, tracer: Tracer, request: Any, routing: str, stream: bool) -> None:
        self.tracer = tracer
        self.operation = operation_name(request)
        self.stream = stream
        self.attempts = 0
        self.replica = ""  # the one that answered
        self.span = tracer.start_span(f"route {request.model}", attributes={
            "gen_ai.operation.name": self.operation, "gen_ai.request.model": request.model,
            "gen_ai.system": SYSTEM, "inferd.routing": routing})

    async def attempt(self, replica: Replica, model: str, run: Awaitable[T]) -> T:
        """``run`` (the call on ``replica``) under its attempt's span."""
        self.attempts += 1
        span = self.tracer.start_span(
            f"{self.operation} {model}", context=set_span_in_context(self.span),
            kind=SpanKind.CLIENT, attributes={
                "gen_ai.operation.name": self.operation, "gen_ai.request.model": model,
                "gen_ai.system": replica.engine.kind, "inferd.replica.id": replica.id,
                "inferd.attempt": self.attempts})
        token = attach(with_tracer(self.tracer, span))
        try:
            result = await run
        except UpstreamUnavailable as exc:
            self._end(span, "unavailable", exc)
            raise
        except Exception as exc:
            self._end(span, "failed", exc)
            raise
        except BaseException as exc:
            self._end(span, "cancelled", exc)
            raise
        finally:
            detach(token)
        self.replica = replica.id
        if self.stream:  # both spans last as long as the stream
            stream: Any = result
            ending: Any = self._ending(span, stream)
            return ending  # type: ignore[no-any-return]
        self._end(span, "ok", None,
                  answer_attributes(result) if isinstance(result, Result) else None)
        return result

    async def _ending(self, span: Span, stream: AsyncIterator[Chunk]) -> AsyncIterator[Chunk]:
        outcome, error = "ok", None
        try:
            async for chunk in stream:
                yield chunk
        except BaseException as exc:
            outcome, error = ("failed" if isinstance(exc, Exception) else "cancelled"), exc
            raise
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()
            self._end(span, outcome, error)
            self.end(error)

    def _end(self, span: Span, outcome: str, error: BaseException | None,
             attributes: dict[str, AttributeValue] | None = None) -> None:
        span.set_attributes({**(attributes or {}), "inferd.attempt.outcome": outcome})
        if error is not None:
            failed(span, error)
        span.end()

    def end(self, error: BaseException | None) -> None:
        """The route is done (an answer, a stream started and ended, or every attempt
        failed with ``error``)."""
        attributes: dict[str, AttributeValue] = {"inferd.route.attempts": self.attempts}
        if self.replica:
            attributes["inferd.replica.id"] = self.replica
        self.span.set_attributes(attributes)
        if error is not None:
            failed(self.span, error)
        self.span.end()
