"""The span of one request through ``Inference`` (limits, router, engine), when it traces.

Named ``{gen_ai.operation.name} {gen_ai.request.model}`` with GenAI's semantic conventions:
``gen_ai.system`` (``inferd``), the operation, the model asked for and the one that answered,
the finish reason of each choice and the tokens used (``gen_ai.usage.input_tokens``,
``gen_ai.usage.output_tokens``); and inferd's own: the replica that served it, whether it
streamed, the HTTP status it ended with. Everything the router does for it is its child.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

from opentelemetry.context import attach, detach
from opentelemetry.util.types import AttributeValue

from inferd.schemas.answers import ImagesAnswer, Result, Usage, finish_reasons
from inferd.schemas.chunks import Chunk
from inferd.tracing import (
    SYSTEM,
    Span,
    Tracer,
    failed,
    usage_attributes,
    with_tracer,
)

T = TypeVar("T")

# GenAI's operation names for inferd's endpoint names (others keep theirs: rerank, images...)
OPERATIONS = {"chat": "chat", "completions": "text_completion", "embeddings": "embeddings"}


def start_span(tracer: Tracer, endpoint: str, model: str, stream: bool) -> Span:
    operation = OPERATIONS.get(endpoint, endpoint)
    return tracer.start_span(f"{operation} {model}", attributes={
        "gen_ai.system": SYSTEM, "gen_ai.operation.name": operation,
        "gen_ai.request.model": model, "inferd.stream": stream})


async def within(tracer: Tracer, span: Span, run: Awaitable[T]) -> T:
    """``run`` with ``span`` current (what the router and engines do is its child)."""
    token = attach(with_tracer(tracer, span))
    try:
        return await run
    finally:
        detach(token)


def answered(span: Span, answer: Result) -> None:
    """What an answer in one piece says of itself: the model, the finish reasons."""
    attributes: dict[str, AttributeValue] = {}
    model = None if isinstance(answer, ImagesAnswer) else answer.model
    if model is not None:
        attributes["gen_ai.response.model"] = model
    reasons = finish_reasons(answer)
    if reasons:
        attributes["gen_ai.response.finish_reasons"] = reasons
    span.set_attributes(attributes)


class StreamNotes:
    """What a stream's chunks say, gathered for its span: the model, each choice's finish."""

    __slots__ = ("model", "reasons")

    def __init__(self) -> None:
        self.model: str | None = None
        self.reasons: dict[int, str] = {}

    def feed(self, chunk: Chunk) -> None:
        if self.model is None and isinstance(chunk.get("model"), str):
            self.model = chunk["model"]
        for choice in chunk.get("choices") or ():
            if isinstance(choice, dict) and choice.get("finish_reason"):
                index = choice.get("index") or 0
                if isinstance(index, int | float | str):
                    self.reasons[int(index)] = str(choice["finish_reason"])

    def note(self, span: Span) -> None:
        if self.model is not None:
            span.set_attribute("gen_ai.response.model", self.model)
        if self.reasons:
            span.set_attribute("gen_ai.response.finish_reasons",
                               [self.reasons[i] for i in sorted(self.reasons)])


def end_span(span: Span, usage: Usage | None, status: int, error: str | None,
             replica: str | None) -> None:
    attributes: dict[str, AttributeValue] = {}
    if usage is not None:
        attributes.update(usage_attributes(usage.prompt_tokens, usage.completion_tokens))
    attributes["http.response.status_code"] = status
    if replica is not None:
        attributes["inferd.replica.id"] = replica
    if error is not None:
        attributes["error.type"] = error
    span.set_attributes(attributes)  # at once: each call takes the span's lock
    if error is not None and (status >= 500 or status == 499):
        failed(span, None, error)
    span.end()
