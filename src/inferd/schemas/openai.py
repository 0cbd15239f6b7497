"""OpenAI wire models for requests (validated) and helpers to build responses.

Requests are pydantic models: they reject a malformed body with the name of the field.
Unknown fields are kept (``extra="allow"``) so that an ``http`` replica can pass engine-specific
parameters through; a local engine refuses the ones it cannot honour, naming them.
Answers are the typed models of ``inferd.schemas.answers``; stream chunks stay plain dicts in
the OpenAI shapes (cheap to build and to pass through, one per token).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)

from inferd.errors import InvalidRequest
from inferd.jsontypes import JsonObject
from inferd.schemas.answers import ChatChoice, ChatCompletion, ChatMessageOut, FunctionCall, Usage
from inferd.schemas.chunks import Chunk, Delta, FunctionDelta, UsageDict


class _Wire(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class TextPart(BaseModel):
    """A text part of a message's content."""

    model_config = ConfigDict(extra="allow")
    type: Literal["text"]
    text: str


class ImagePart(BaseModel):
    """An image (or audio, file) part: passed through to replicas as it is, refused by
    text-only engines. inferd never fetches an image URL itself."""

    model_config = ConfigDict(extra="allow")
    type: Literal["image_url", "input_audio", "file", "refusal"]

    @model_validator(mode="after")
    def _image_url(self) -> ImagePart:
        if self.type == "image_url":
            image = (self.model_extra or {}).get("image_url")
            url = image.get("url") if isinstance(image, dict) else None
            if not isinstance(url, str) or not url.startswith(("data:", "http://", "https://")):
                raise ValueError("an image_url part needs 'image_url': {'url': ...} with an "
                                 "http(s) URL or a data URL")
        return self


ContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class NonTextContent(ValueError):
    """A content part other than text, where only text is read; ``part`` is its index."""

    def __init__(self, part: int, kind: str) -> None:
        super().__init__(f"content part of type '{kind}' is not supported")
        self.part = part
        self.kind = kind


class ChatMessage(BaseModel):
    """One message of a conversation."""

    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None

    def text(self) -> str:
        """The content as one string; raises ``NonTextContent`` for non-text parts."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        texts: list[str] = []
        for index, part in enumerate(self.content):
            if not isinstance(part, TextPart):
                raise NonTextContent(index, part.type)
            texts.append(part.text)
        return "".join(texts)


class StreamOptions(BaseModel):
    include_usage: bool = False


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonObject | None = None


StopField = str | list[str] | None

# Bounds that keep every number a database column and the engines can hold.
MAX_TOKENS = 2**31 - 1
INT32 = 2**31 - 1
INT64 = 2**63 - 1
# Times: epoch seconds up to the year 9999, durations up to ten years (an API answer shows
# times as whole seconds: a larger value would not serialise).
MAX_EPOCH = 253_402_300_799.0
MAX_DURATION = 10 * 365 * 86400.0


def _printable(name: str) -> str:
    if not name.isprintable():
        raise ValueError("a model name may not contain control characters")
    return name


# A model name as every table holds it (the usage table records even unknown ones): at most
# 191 characters (an indexed column on MariaDB), no control characters.
ModelName = Annotated[str, Field(min_length=1, max_length=191), AfterValidator(_printable)]


class _Sampling(_Wire):
    """Sampling fields shared by chat and text completions."""

    model: ModelName
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    stop: StopField = None
    seed: int | None = Field(default=None, ge=-INT64 - 1, le=INT64)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    n: int | None = Field(default=None, ge=1, le=128)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    logit_bias: dict[str, float] | None = None
    # The routing key given outside the body (the ``x-session-id`` header, a Responses
    # conversation or chain): ``inferd.routing.affinity.routing_key``.
    _route: str | None = PrivateAttr(default=None)

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, v: StopField) -> StopField:
        if isinstance(v, list) and len(v) > 4:
            raise ValueError("at most 4 stop sequences are allowed")
        return v

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class Prediction(BaseModel):
    """``prediction`` (Predicted Outputs): text the answer is expected to repeat. A latency
    hint only: it never changes the answer, so an engine may ignore it."""

    type: Literal["content"]
    content: str | list[TextPart]


ReasoningEffort = Literal["none", "minimal", "low", "medium", "high", "xhigh"]


class ChatCompletionRequest(_Sampling):
    """``POST /v1/chat/completions``.

    Besides the core fields it takes what current clients send: ``reasoning_effort`` and
    ``verbosity`` (forwarded to ``http`` replicas; a local model, which does no reasoning,
    ignores them), ``prediction`` (a latency hint), ``modalities: ["text"]`` and ``audio:
    null`` (audio output is refused), and the deprecated ``functions``/``function_call``,
    read as ``tools``/``tool_choice``; a request that used them gets the legacy answer shape
    (``message.function_call``, ``finish_reason: "function_call"``: ``legacy_answer``).
    """

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    response_format: ResponseFormat | None = None
    tools: list[JsonObject] | None = None
    tool_choice: Any = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    reasoning_effort: ReasoningEffort | None = None
    verbosity: Literal["low", "medium", "high"] | None = None
    prediction: Prediction | None = None
    modalities: list[str] | None = Field(default=None, max_length=2)
    audio: JsonObject | None = None
    functions: list[JsonObject] | None = Field(default=None, max_length=128)
    function_call: str | JsonObject | None = None
    _legacy_functions: bool = PrivateAttr(default=False)

    @field_validator("modalities")
    @classmethod
    def _text_only(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and any(m != "text" for m in v):
            raise ValueError("only the 'text' output modality is supported: this server does "
                             "not produce audio")
        return v

    @field_validator("audio")
    @classmethod
    def _no_audio(cls, v: JsonObject | None) -> JsonObject | None:
        if v is not None:
            raise ValueError("audio output is not supported: leave 'audio' out or send null")
        return v

    @model_validator(mode="after")
    def _legacy(self) -> ChatCompletionRequest:
        _legacy_history(self.messages)
        if self.functions is None and self.function_call is None:
            return self
        if self.functions is None:
            if self.function_call == "none" and self.tools is None:
                self._drop_legacy()
                return self
            raise InvalidRequest("'function_call' is only allowed when 'functions' are "
                                 "specified (with 'tools', use 'tool_choice').",
                                 param="function_call", code="invalid_value")
        if self.tools is not None or self.tool_choice is not None:
            raise InvalidRequest("Send 'tools' and 'tool_choice', or the deprecated "
                                 "'functions' and 'function_call', not both.",
                                 param="functions", code="invalid_value")
        self.tools = [{"type": "function", "function": f} for f in self.functions]
        choice = self.function_call
        if isinstance(choice, dict):
            name = choice.get("name")
            if not isinstance(name, str):
                raise InvalidRequest("Invalid value for 'function_call': expected 'none', "
                                     "'auto' or {\"name\": ...}.", param="function_call",
                                     code="invalid_value")
            if not any(isinstance(f, dict) and f.get("name") == name for f in self.functions):
                raise InvalidRequest(f"Invalid value for 'function_call': no function named "
                                     f"'{name}' in 'functions'.", param="function_call",
                                     code="invalid_value")
            self.tool_choice = {"type": "function", "function": {"name": name}}
        elif choice in ("none", "auto"):
            self.tool_choice = choice
        elif choice is not None:
            raise InvalidRequest("Invalid value for 'function_call': expected 'none', 'auto' "
                                 "or {\"name\": ...}.", param="function_call",
                                 code="invalid_value")
        extra = self.__pydantic_extra__
        if extra is not None:
            extra.setdefault("parallel_tool_calls", False)  # the legacy answer holds one call
        self._drop_legacy()
        self._legacy_functions = True
        return self

    def _drop_legacy(self) -> None:
        """Forget ``functions``/``function_call`` once read as tools (a replica gets tools)."""
        self.functions = self.function_call = None
        self.__pydantic_fields_set__.difference_update({"functions", "function_call"})

    @property
    def legacy_functions(self) -> bool:
        """Whether the client sent ``functions``: it reads the legacy answer shape."""
        # read where pydantic keeps private attributes: its attribute lookup of one costs
        # about 30 times as much, and every chat request asks twice
        private = self.__pydantic_private__
        return bool(private.get("_legacy_functions")) if private else self._legacy_functions

    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


def _legacy_history(messages: list[ChatMessage]) -> None:
    """Earlier turns of the legacy function calling as tool calls: an assistant message's
    ``function_call`` becomes its one tool call, and a ``function`` message answering it the
    ``tool`` message of that call."""
    last: str | None = None
    for index, message in enumerate(messages):
        extra = message.__pydantic_extra__
        if extra is None:
            continue
        if message.role == "assistant" and isinstance(extra.get("function_call"), dict):
            call = extra.pop("function_call")
            if not extra.get("tool_calls"):
                last = f"call_{index}"
                extra["tool_calls"] = [{"id": last, "type": "function", "function": {
                    "name": str(call.get("name", "")),
                    "arguments": call.get("arguments", "{}")}}]
        elif message.role == "function" and last is not None and "tool_call_id" not in extra:
            message.role = "tool"
            extra["tool_call_id"] = last


def _legacy_delta(delta: Delta) -> Delta:
    """A stream delta with the pieces of its first tool call as ``function_call`` (the rest
    dropped: a legacy request asks for one call)."""
    out = delta.copy()
    out.pop("tool_calls", None)
    calls = [c for c in delta.get("tool_calls") or []
             if isinstance(c, dict) and not c.get("index")]
    if calls:
        function = calls[0].get("function") or FunctionDelta()
        call = FunctionDelta()
        if "name" in function:
            call["name"] = function["name"]
        if "arguments" in function:
            call["arguments"] = function["arguments"]
        out["function_call"] = call
    return out


def _legacy_chunk(chunk: Chunk) -> Chunk:
    choices = []
    for given in chunk.get("choices") or []:
        choice = given.copy()
        if isinstance(choice.get("delta"), dict):
            choice["delta"] = _legacy_delta(choice["delta"])
        if choice.get("finish_reason") == "tool_calls":
            choice["finish_reason"] = "function_call"
        choices.append(choice)
    return {**chunk, "choices": choices} if "choices" in chunk else chunk


def legacy_answer(result: ChatCompletion) -> ChatCompletion:
    """A chat completion in the shape a ``functions`` request gets: ``message.function_call``
    and ``finish_reason: "function_call"`` instead of ``tool_calls`` (a copy: ``result`` is
    left as it is)."""
    legacy = result.model_copy(deep=True)
    for choice in legacy.choices:
        message = choice.message
        if message.tool_calls is not None:
            calls = message.tool_calls
            message.unset("tool_calls")
            if calls:  # the first (a legacy request asks for one call)
                message.function_call = FunctionCall(name=calls[0].function.name,
                                                     arguments=calls[0].function.arguments)
        if choice.finish_reason == "tool_calls":
            choice.finish_reason = "function_call"
    return legacy


async def legacy_stream(chunks: AsyncIterator[Chunk]) -> AsyncIterator[Chunk]:
    """Stream chunks in the legacy shape: ``delta.function_call`` pieces."""
    async for chunk in chunks:
        yield _legacy_chunk(chunk)


# A prompt or an embedding input given as token ids of the model's own tokenizer, as the
# OpenAI API allows: a list of ints, or a list of such lists.
TokenIds = list[Annotated[int, Field(ge=0, le=2**31 - 1)]]
Prompt = str | TokenIds
PromptField = str | list[str] | TokenIds | list[TokenIds]


def _prompts(value: PromptField) -> list[Prompt]:
    if isinstance(value, str):
        return [value]
    if value and all(isinstance(v, int) for v in value):
        return [list(value)]  # type: ignore[arg-type]
    return list(value)  # type: ignore[arg-type]


def _check_prompts(value: PromptField, name: str) -> PromptField:
    if isinstance(value, list) and not value:
        raise ValueError(f"{name} must not be an empty list")
    if isinstance(value, list) and any(isinstance(v, list) and not v for v in value):
        raise ValueError(f"{name} must not hold an empty list of token ids")
    return value


class CompletionRequest(_Sampling):
    """``POST /v1/completions``."""

    prompt: PromptField = Field(...)
    echo: bool | None = None
    suffix: str | None = None
    logprobs: int | None = None
    best_of: int | None = None

    @field_validator("prompt")
    @classmethod
    def _non_empty(cls, v: PromptField) -> PromptField:
        return _check_prompts(v, "prompt")

    def prompts(self) -> list[Prompt]:
        """Each prompt: a string, or a list of token ids."""
        return _prompts(self.prompt)

    def token_limit(self) -> int | None:
        return self.max_tokens


class EmbeddingRequest(_Wire):
    """``POST /v1/embeddings``."""

    model: ModelName
    input: PromptField = Field(...)
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1, le=65_536)
    user: str | None = None

    @field_validator("input")
    @classmethod
    def _non_empty(cls, v: PromptField) -> PromptField:
        if isinstance(v, list) and len(v) > 2048 and not isinstance(v[0], int):
            raise ValueError("input may hold at most 2048 items")
        return _check_prompts(v, "input")

    def inputs(self) -> list[Prompt]:
        """Each input: a string, or a list of token ids."""
        return _prompts(self.input)


# ---------------------------------------------------------------------------- responses

def message_chars(request: ChatCompletionRequest) -> int:
    """The characters of a chat's message text (string contents and text parts)."""
    chars = 0
    for message in request.messages:
        content = message.content
        if isinstance(content, str):
            chars += len(content)
        elif content is not None:
            chars += sum(len(getattr(part, "text", "") or "") for part in content)
    return chars


def usage_dict(prompt: int, completion: int) -> UsageDict:
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


def chat_completion(*, id: str, model: str, text: str, finish_reason: str | None,
                    prompt_tokens: int, completion_tokens: int,
                    created: int | None = None) -> ChatCompletion:
    """A one-choice chat completion of ``text``."""
    return ChatCompletion(
        id=id, object="chat.completion", created=created or int(time.time()), model=model,
        choices=[ChatChoice(index=0, message=ChatMessageOut(role="assistant", content=text,
                                                             refusal=None),
                            logprobs=None, finish_reason=finish_reason or "stop")],
        usage=Usage.of(prompt_tokens, completion_tokens))


def chat_chunk(*, id: str, model: str, created: int, delta: Delta,
               finish_reason: str | None = None) -> Chunk:
    return {"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None,
                         "finish_reason": finish_reason}]}


def usage_chunk(*, id: str, model: str, created: int, obj: str, prompt_tokens: int,
                completion_tokens: int, cached_tokens: int | None = None) -> Chunk:
    """The last chunk of a stream: no choices, the usage (with ``cached_tokens``, the prompt
    tokens read from a cache, under ``prompt_tokens_details``)."""
    usage = usage_dict(prompt_tokens, completion_tokens)
    if cached_tokens is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": cached_tokens}
    return {"id": id, "object": obj, "created": created, "model": model, "choices": [],
            "usage": usage}
