"""What the data-plane routes answer, as pydantic models: the OpenAPI document's response
schemas (``inferd.http.openapi``), so client generators and the fuzzer know every shape.

The routes build their answers as plain dicts (cheap, and passed through from ``http``
replicas as the upstream sent them); these models describe those dicts and are never used to
build them. Fields a replica may add are allowed: only what inferd itself always sends is
required. A field that is always present but may be ``null`` is typed ``X | None`` with no
default.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict


class Answer(BaseModel):
    """The base of every answer model: fields beyond the described ones are allowed."""

    model_config = ConfigDict(extra="allow")


# -- the OpenAI API -----------------------------------------------------------------------------
class Usage(Answer):
    prompt_tokens: int
    completion_tokens: int | None = None
    total_tokens: int


class ChatMessageOut(Answer):
    role: str
    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


class ChatChoice(Answer):
    index: int
    message: ChatMessageOut
    finish_reason: str | None


class ChatCompletion(Answer):
    """``chat.completion`` (a stream sends ``chat.completion.chunk`` events instead)."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage | None = None


class CompletionChoice(Answer):
    index: int
    text: str
    finish_reason: str | None


class TextCompletion(Answer):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class Embedding(Answer):
    object: Literal["embedding"]
    index: int
    embedding: list[float] | str  # a string with ``encoding_format: base64``


class EmbeddingList(Answer):
    object: Literal["list"]
    data: list[Embedding]
    model: str
    usage: Usage | None = None


class Model(Answer):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    capabilities: list[str]
    context_length: int | None
    kind: str


class ModelList(Answer):
    object: Literal["list"]
    data: list[Model]


class RerankResult(Answer):
    index: int
    relevance_score: float
    document: dict[str, Any] | None = None


class RerankAnswer(Answer):
    id: str
    model: str
    results: list[RerankResult]
    usage: dict[str, int] | None = None


class Score(Answer):
    index: int
    object: Literal["score"]
    score: float


class ScoreList(Answer):
    id: str
    object: Literal["list"]
    model: str
    data: list[Score]
    usage: dict[str, int] | None = None


class ImageData(Answer):
    url: str | None = None
    b64_json: str | None = None
    revised_prompt: str | None = None


class ImagesAnswer(Answer):
    created: int
    data: list[ImageData]


class ModerationList(Answer):
    """As the moderation replica answers it (passed through)."""

    id: str | None = None
    model: str | None = None
    results: list[dict[str, Any]]


class Transcription(Answer):
    """As the transcription replica answers it (passed through; JSON formats)."""

    text: str


# -- the Responses API --------------------------------------------------------------------------
class ResponseObject(Answer):
    id: str
    object: Literal["response"]
    created_at: int
    status: str
    model: str
    output: list[dict[str, Any]]
    error: dict[str, Any] | None
    metadata: dict[str, Any] | None = None


class Deleted(Answer):
    """A deleted object: ``{"id", "object", "deleted": true}``."""

    id: str | int
    object: str
    deleted: Literal[True]


class ItemList(Answer):
    object: Literal["list"]
    data: list[dict[str, Any]]
    first_id: str | None
    last_id: str | None
    has_more: bool


class Conversation(Answer):
    id: str
    object: Literal["conversation"]
    created_at: int
    metadata: dict[str, Any]


class InputTokens(Answer):
    object: Literal["response.input_tokens"]
    input_tokens: int


class ConversationItem(Answer):
    id: str
    type: str


# -- Anthropic's Messages API -------------------------------------------------------------------
class AnthropicUsage(Answer):
    input_tokens: int
    output_tokens: int


class AnthropicMessage(Answer):
    id: str
    type: Literal["message"]
    role: Literal["assistant"]
    model: str
    content: list[dict[str, Any]]
    stop_reason: str | None
    stop_sequence: str | None
    usage: AnthropicUsage


class TokenCount(Answer):
    input_tokens: int


class AnthropicErrorDetail(Answer):
    type: str
    message: str


class AnthropicError(Answer):
    """Anthropic's error shape, sent on ``/v1/messages``."""

    type: Literal["error"]
    error: AnthropicErrorDetail


# -- jobs, files, batches -----------------------------------------------------------------------
class Job(Answer):
    id: str
    object: Literal["job"]
    endpoint: str
    model: str | None
    status: Literal["pending", "running", "completed", "failed", "cancelled"]
    priority: int
    created_at: int
    started_at: int | None
    finished_at: int | None
    deadline_at: int | None
    attempts: int
    request: dict[str, Any] | None
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    usage: dict[str, Any] | None
    webhook_url: str | None
    webhook_status: str | None
    metadata: dict[str, Any] | None
    batch_id: str | None
    custom_id: str | None
    owner: str | None = None  # the id of the key that submitted it


class JobList(ItemList):
    data: list[Job]  # type: ignore[assignment]


class WebhookAttempts(Answer):
    object: Literal["list"]
    data: list[dict[str, Any]]


class WebhookSecret(Answer):
    object: Literal["webhook_secret"]
    secret: str
    scope: Literal["key", "installation"]


class File(Answer):
    id: str
    object: Literal["file"]
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: str
    expires_at: int | None


class FileList(ItemList):
    data: list[File]  # type: ignore[assignment]


class BatchCounts(Answer):
    total: int
    completed: int
    failed: int


class Batch(Answer):
    id: str
    object: Literal["batch"]
    endpoint: str
    input_file_id: str
    completion_window: str
    status: str
    output_file_id: str | None
    error_file_id: str | None
    created_at: int
    request_counts: BatchCounts
    metadata: dict[str, Any] | None


class BatchList(ItemList):
    data: list[Batch]  # type: ignore[assignment]


class UsagePoint(Answer):
    bucket_start: float
    requests: int
    errors: int  # 4xx and 5xx answers, not the cancelled ones
    cancelled: int  # broken off by the client (status 499): a closed connection, a cancel


class UsageSeriesLine(Answer):
    name: str | None
    data: list[UsagePoint]


class UsageSeries(Answer):
    object: Literal["usage.series"]
    bucket: str
    bucket_seconds: int
    split_by: str
    series: list[UsageSeriesLine]
