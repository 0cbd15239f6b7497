"""What the data-plane routes answer, as pydantic models: the OpenAPI document's response
schemas (``inferd.http.openapi``), so client generators and the fuzzer know every shape.

The OpenAI results (``ChatCompletion``, ``TextCompletion``, ``EmbeddingList``,
``ImagesAnswer``) are also what engines, the router and ``Inference`` return: consumers read
their attributes. An ``http`` replica's answer is validated into them from its raw bytes (in
pydantic's own parser, which replaces the JSON parse it needed anyway), and they are sent with
``wire``/``wire_json``: only the fields that were set, so an answer keeps the keys (and the
nulls) it was built or received with. Fields a replica may add are allowed and kept: only what
inferd itself always sends is required. A field that is always present but may be ``null`` is
typed ``X | None`` with no default.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from inferd.jsontypes import JsonObject


class Answer(BaseModel):
    """The base of every answer model: fields beyond the described ones are allowed."""

    model_config = ConfigDict(extra="allow")

    def wire(self) -> JsonObject:
        """The JSON object sent: the fields that were set (received or built), extras kept."""
        return self.model_dump(mode="json", exclude_unset=True)

    def wire_json(self) -> bytes:
        """``wire`` as JSON bytes, serialised at once."""
        return self.__pydantic_serializer__.to_json(self, exclude_unset=True)

    def unset(self, name: str) -> None:
        """Leave field ``name`` out of the wire form again (as if never set)."""
        setattr(self, name, None)
        self.model_fields_set.discard(name)


# -- the OpenAI API -----------------------------------------------------------------------------
class PromptTokensDetails(Answer):
    cached_tokens: int | None = None


class Usage(Answer):
    prompt_tokens: int
    completion_tokens: int | None = None
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None

    @model_validator(mode="before")
    @classmethod
    def _total(cls, value: Any) -> Any:
        """A replica's usage without ``total_tokens`` gets the sum (not refused)."""
        if isinstance(value, dict) and value.get("total_tokens") is None and isinstance(
                value.get("prompt_tokens"), int):
            completion = value.get("completion_tokens")
            value = {**value, "total_tokens": value["prompt_tokens"]
                     + (completion if isinstance(completion, int) else 0)}
        return value

    @classmethod
    def of(cls, prompt: int, completion: int) -> Usage:
        return cls(prompt_tokens=prompt, completion_tokens=completion,
                   total_tokens=prompt + completion)

    @property
    def tokens(self) -> int:
        """Prompt and completion tokens (what a token budget is charged)."""
        return self.prompt_tokens + (self.completion_tokens or 0)

    @property
    def cached_tokens(self) -> int:
        details = self.prompt_tokens_details
        return (details.cached_tokens or 0) if details is not None else 0


def usage_of(value: object) -> Usage | None:
    """A usage object as a client or replica sent it (a stream's last chunk, a passed-through
    answer), None when it is missing or not an OpenAI usage (it is then not counted)."""
    if not isinstance(value, dict) or not value:
        return None
    try:
        return Usage.model_validate(value)
    except ValidationError:
        return None


class FunctionCall(Answer):
    name: str
    arguments: str


class ToolCall(Answer):
    # inferd always sends both; a replica that leaves one out is passed on as it sent it
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class TopLogprob(Answer):
    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprob(Answer):
    """A ``ChatCompletionTokenLogprob``: one generated token and its likeliest rivals."""

    token: str
    logprob: float
    bytes: list[int] | None = None
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(Answer):
    content: list[TokenLogprob] | None
    refusal: list[TokenLogprob] | None = None


class ChatMessageOut(Answer):
    role: str
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[ToolCall] | None = None
    function_call: FunctionCall | None = None  # the legacy shape (``legacy_answer``)


class ChatChoice(Answer):
    index: int
    message: ChatMessageOut
    logprobs: ChoiceLogprobs | None = None
    finish_reason: str | None


class ChatCompletion(Answer):
    """``chat.completion`` (a stream sends ``chat.completion.chunk`` events instead)."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage | None = None

    def text(self) -> str:
        """The first choice's content ("" when it has none: a tool call, no choice)."""
        return (self.choices[0].message.content or "") if self.choices else ""

    def finish_reason(self) -> str | None:
        return self.choices[0].finish_reason if self.choices else None


class CompletionLogprobs(Answer):
    """The legacy completions shape of logprobs."""

    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float]] | None
    text_offset: list[int]


class CompletionChoice(Answer):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
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


class TokenCountUsage(Answer):
    """The usage of a rerank or score answer (a replica may send only ``total_tokens``)."""

    prompt_tokens: int | None = None
    total_tokens: int | None = None

    def as_usage(self) -> Usage:
        """As metered: its prompt tokens (no completion)."""
        return Usage(prompt_tokens=self.prompt_tokens or 0,
                     total_tokens=self.total_tokens or self.prompt_tokens or 0)


class RerankDocument(Answer):
    text: str


class RerankResult(Answer):
    index: int
    relevance_score: float
    document: RerankDocument | None = None


class RerankAnswer(Answer):
    id: str
    model: str
    results: list[RerankResult]
    usage: TokenCountUsage | None = None


class Score(Answer):
    index: int
    object: Literal["score"]
    score: float


class ScoreList(Answer):
    id: str
    object: Literal["list"]
    created: int | None = None
    model: str
    data: list[Score]
    usage: TokenCountUsage | None = None


class ImageData(Answer):
    url: str | None = None
    b64_json: str | None = None
    revised_prompt: str | None = None


class ImageInputDetails(Answer):
    text_tokens: int = 0
    image_tokens: int = 0


class ImagesUsage(Answer):
    """OpenAI's token fields (0 for a diffusion model) and inferd's count of images and of
    the denoising steps they ran."""

    images: int | None = None
    steps: int | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None
    input_tokens_details: ImageInputDetails | None = None


class ImagesAnswer(Answer):
    created: int
    data: list[ImageData]
    usage: ImagesUsage | None = None
    output_format: str | None = None
    size: str | None = None
    seed: int | None = None


# What engines and the router answer in one piece.
Result = ChatCompletion | TextCompletion | EmbeddingList | ImagesAnswer | RerankAnswer | ScoreList


def metered_usage(result: Result) -> Usage | None:
    """The tokens an answer is metered by (images are metered by their count instead)."""
    if isinstance(result, RerankAnswer | ScoreList):
        return None if result.usage is None else result.usage.as_usage()
    if isinstance(result, ImagesAnswer):
        return None
    return result.usage


def finish_reasons(result: Result) -> list[str]:
    """The ``finish_reason`` of each choice of a completion (none for other answers)."""
    if isinstance(result, ChatCompletion | TextCompletion):
        return [c.finish_reason for c in result.choices if c.finish_reason]
    return []


class ModerationList(Answer):
    """As the moderation replica answers it (passed through)."""

    id: str | None = None
    model: str | None = None
    results: list[JsonObject]


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
    output: list[JsonObject]
    error: JsonObject | None
    metadata: JsonObject | None = None


class Deleted(Answer):
    """A deleted object: ``{"id", "object", "deleted": true}``."""

    id: str | int
    object: str
    deleted: Literal[True]


class ItemList(Answer):
    object: Literal["list"]
    data: list[JsonObject]
    first_id: str | None
    last_id: str | None
    has_more: bool


class Conversation(Answer):
    id: str
    object: Literal["conversation"]
    created_at: int
    metadata: JsonObject


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
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None


class AnthropicText(Answer):
    type: Literal["text"]
    text: str


class AnthropicToolUse(Answer):
    type: Literal["tool_use"]
    id: str
    name: str
    input: JsonObject  # the call's arguments, as the model wrote them (any JSON object)


AnthropicBlock = Annotated[AnthropicText | AnthropicToolUse, Field(discriminator="type")]


class AnthropicMessage(Answer):
    id: str
    type: Literal["message"]
    role: Literal["assistant"]
    model: str
    content: list[AnthropicBlock]
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
    request: JsonObject | None
    result: JsonObject | None
    error: JsonObject | None
    usage: JsonObject | None
    webhook_url: str | None
    webhook_status: str | None
    metadata: JsonObject | None
    batch_id: str | None
    custom_id: str | None
    owner: str | None = None  # the id of the key that submitted it


class JobList(ItemList):
    data: list[Job]  # type: ignore[assignment]


class WebhookAttempts(Answer):
    object: Literal["list"]
    data: list[JsonObject]


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
    metadata: JsonObject | None


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
