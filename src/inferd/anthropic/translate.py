"""Messages request <-> chat completion."""

from __future__ import annotations

import json
import re
import uuid
from typing import Annotated, Literal, Required, TypedDict

from pydantic import BaseModel, ConfigDict, Field

from inferd.errors import InvalidRequest, UnsupportedParameter
from inferd.jsontypes import JsonObject
from inferd.schemas.answers import (
    AnthropicMessage,
    AnthropicText,
    AnthropicToolUse,
    AnthropicUsage,
    ChatCompletion,
    Usage,
)
from inferd.schemas.openai import MAX_TOKENS, ChatCompletionRequest, ModelName

# Fields a client such as Claude Code sends that do not change what inferd can answer.
IGNORED_FIELDS = frozenset({"metadata", "service_tier", "thinking", "context_management",
                            "cache_control", "inference_geo", "speed", "diagnostics",
                            "user_profile_id", "workspace_id", "container"})
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use",
                "content_filter": "refusal"}


class _Block(BaseModel):
    model_config = ConfigDict(extra="allow")


class TextBlock(_Block):
    type: Literal["text"]
    text: str


class ToolUseBlock(_Block):
    type: Literal["tool_use"]
    id: str
    name: str
    input: JsonObject = Field(default_factory=dict)


class ToolResultBlock(_Block):
    type: Literal["tool_result"]
    tool_use_id: str
    content: str | list[TextBlock] = ""
    is_error: bool | None = None


class OtherBlock(_Block):
    """Blocks inferd cannot feed a text model (images, documents); refused by name."""

    type: Literal["image", "document", "thinking", "redacted_thinking", "search_result"]


Block = Annotated[TextBlock | ToolUseBlock | ToolResultBlock | OtherBlock,
                  Field(discriminator="type")]


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["user", "assistant"]
    content: str | list[Block]


class Tool(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str = Field(min_length=1, max_length=128)
    description: str | None = None
    input_schema: JsonObject
    type: str | None = None


class ToolChoice(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class OutputConfig(BaseModel):
    """``output_config``: ``format`` becomes the chat request's JSON-schema response format;
    ``effort`` has no meaning for these models and is ignored."""

    model_config = ConfigDict(extra="forbid")
    effort: str | None = None
    format: JsonObject | None = None


class CountTokensRequest(BaseModel):
    """``POST /v1/messages/count_tokens``."""

    model_config = ConfigDict(extra="allow")
    model: ModelName
    messages: list[Message] = Field(min_length=1)
    system: str | list[TextBlock] | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    output_config: OutputConfig | None = None


class MessagesRequest(CountTokensRequest):
    """``POST /v1/messages``."""

    max_tokens: int = Field(ge=1, le=MAX_TOKENS)
    stop_sequences: list[str] | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=1.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=0)
    stream: bool = False


class ChatFunction(TypedDict):
    name: str
    arguments: str


class ChatToolCall(TypedDict):
    id: str
    type: Literal["function"]
    function: ChatFunction


class ChatMessageBody(TypedDict, total=False):
    """A chat message as built here (validated as a ``ChatCompletionRequest``'s)."""

    role: Required[str]
    content: Required[str | None]
    tool_call_id: str
    tool_calls: list[ChatToolCall]


class ChatTool(TypedDict):
    type: Literal["function"]
    function: JsonObject


class ChatToolFields(TypedDict, total=False):
    tools: list[ChatTool]
    tool_choice: str | JsonObject
    parallel_tool_calls: bool


class StreamOptionsBody(TypedDict):
    include_usage: bool


class ChatBody(ChatToolFields, total=False):
    """The chat request a Messages request becomes (validated as a ``ChatCompletionRequest``)."""

    model: Required[str]
    messages: Required[list[ChatMessageBody]]
    max_tokens: int
    stop: list[str]
    temperature: float
    top_p: float
    top_k: int
    response_format: JsonObject
    stream: bool
    stream_options: StreamOptionsBody


def _text(content: str | list[TextBlock]) -> str:
    return content if isinstance(content, str) else "".join(b.text for b in content)


MessageBlock = TextBlock | ToolUseBlock | ToolResultBlock | OtherBlock


def _user(index: int, blocks: list[MessageBlock]) -> list[ChatMessageBody]:
    out: list[ChatMessageBody] = []
    texts: list[str] = []
    for block in blocks:
        if isinstance(block, ToolResultBlock):
            text = _text(block.content)
            out.append({"role": "tool", "tool_call_id": block.tool_use_id,
                        "content": f"Error: {text}" if block.is_error else text})
        elif isinstance(block, TextBlock):
            texts.append(block.text)
        elif isinstance(block, ToolUseBlock):
            raise InvalidRequest(f"messages.{index}: 'tool_use' blocks belong to assistant "
                                 "messages.", param=f"messages.{index}.content")
        elif block.type != "thinking" and block.type != "redacted_thinking":
            raise UnsupportedParameter(f"messages.{index}: content blocks of type "
                                       f"'{block.type}' are not supported.",
                                       param=f"messages.{index}.content")
    if texts:
        out.append({"role": "user", "content": "\n".join(texts)})
    return out


def _assistant(blocks: list[MessageBlock]) -> ChatMessageBody:
    texts = [b.text for b in blocks if isinstance(b, TextBlock)]
    calls: list[ChatToolCall] = [{"id": b.id, "type": "function",
              "function": {"name": b.name, "arguments": json.dumps(b.input)}}
             for b in blocks if isinstance(b, ToolUseBlock)]
    message: ChatMessageBody = {"role": "assistant", "content": "".join(texts) or None}
    if calls:
        message["tool_calls"] = calls
    return message


def chat_messages(request: CountTokensRequest) -> list[ChatMessageBody]:
    out: list[ChatMessageBody] = []
    if request.system:
        out.append({"role": "system", "content": _text(request.system)})
    for index, message in enumerate(request.messages):
        blocks: list[MessageBlock] = ([TextBlock(type="text", text=message.content)]
                             if isinstance(message.content, str) else list(message.content))
        if message.role == "user":
            out += _user(index, blocks)
        else:
            out.append(_assistant(blocks))
    return out


def _add_tools(request: CountTokensRequest, fields: ChatToolFields) -> None:
    """The request's tools (and its tool choice) as the chat request's, into ``fields``."""
    if not request.tools:
        return
    tools: list[ChatTool] = []
    for index, tool in enumerate(request.tools):
        if tool.type not in (None, "custom"):
            raise UnsupportedParameter(f"tools.{index}: server tools of type '{tool.type}' are "
                                       "not supported.", param=f"tools.{index}.type")
        tools.append({"type": "function", "function": {
            "name": tool.name, "description": tool.description or "",
            "parameters": tool.input_schema}})
    fields["tools"] = tools
    choice = request.tool_choice
    if choice is not None:
        if choice.type == "tool":
            if not choice.name:
                raise InvalidRequest("tool_choice.name: required when type is 'tool'.",
                                     param="tool_choice.name")
            fields["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
        else:
            fields["tool_choice"] = {"auto": "auto", "any": "required",
                                     "none": "none"}[choice.type]
        if choice.disable_parallel_tool_use:
            fields["parallel_tool_calls"] = False


def _refuse_unknown(request: CountTokensRequest) -> None:
    unknown = set(request.model_extra or {}) - IGNORED_FIELDS
    if unknown:
        name = sorted(unknown)[0]
        raise InvalidRequest(f"{name}: Extra inputs are not permitted", param=name)


def to_chat(request: MessagesRequest) -> ChatCompletionRequest:
    """The chat-completions request that answers a Messages request."""
    _refuse_unknown(request)
    body: ChatBody = {"model": request.model, "messages": chat_messages(request),
                      "max_tokens": request.max_tokens}
    _add_tools(request, body)
    if request.stop_sequences:
        body["stop"] = request.stop_sequences
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.top_k is not None:
        body["top_k"] = request.top_k
    fmt = request.output_config.format if request.output_config else None
    if fmt is not None:
        if fmt.get("type") != "json_schema" or not isinstance(fmt.get("schema"), dict):
            raise InvalidRequest("output_config.format: a {\"type\": \"json_schema\", "
                                 "\"schema\": {...}} object is required.",
                                 param="output_config.format")
        body["response_format"] = {"type": "json_schema",
                                   "json_schema": {"name": "output", "schema": fmt["schema"]}}
    if request.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return ChatCompletionRequest.model_validate(body)


def count_request(request: CountTokensRequest) -> ChatCompletionRequest:
    """The chat request whose prompt a count_tokens request measures."""
    _refuse_unknown(request)
    body: ChatBody = {"model": request.model, "messages": chat_messages(request)}
    _add_tools(request, body)
    return ChatCompletionRequest.model_validate(body)


# The chat request's names of the places a schema sits, and this API's (a refusal of a schema
# names the place it was found).
_SCHEMA_PLACES = [(re.compile(r"\bresponse_format\.json_schema\.schema\b"),
                   "output_config.format.schema"),
                  (re.compile(r"\btools\[(\d+)\]\.function\.parameters\b"),
                   r"tools.\1.input_schema")]


def own_names(message: str) -> str:
    """An error message of the chat request, naming the Messages request's fields instead."""
    for chat_name, own in _SCHEMA_PLACES:
        message = chat_name.sub(own, message)
    return message


def new_message_id() -> str:
    return "msg_" + uuid.uuid4().hex[:24]


def _arguments(text: str) -> JsonObject:
    try:
        value = json.loads(text) if text.strip() else {}
    except ValueError:
        return {"_raw": text}  # an upstream's malformed arguments, kept visible
    return value if isinstance(value, dict) else {"value": value}


def message_usage(usage: Usage | None) -> AnthropicUsage:
    """Anthropic's usage from a chat usage: ``input_tokens`` counts the prompt tokens read
    afresh and ``cache_read_input_tokens`` those found in the engine's prompt cache, so their
    sum is the whole prompt (what ``count_tokens`` answers); nothing is written to a cache on
    request, so ``cache_creation_input_tokens`` is 0."""
    prompt = 0 if usage is None else usage.prompt_tokens
    cached = 0 if usage is None else min(prompt, usage.cached_tokens)
    return AnthropicUsage(input_tokens=prompt - cached, cache_creation_input_tokens=0,
                          cache_read_input_tokens=cached,
                          output_tokens=0 if usage is None else usage.completion_tokens or 0)


def from_chat(result: ChatCompletion, model: str) -> AnthropicMessage:
    """The Message for a (non-streamed) chat completion."""
    choice = result.choices[0]
    message = choice.message
    content: list[AnthropicText | AnthropicToolUse] = []
    if message.content:
        content.append(AnthropicText(type="text", text=message.content))
    for call in message.tool_calls or []:
        content.append(AnthropicToolUse(type="tool_use", id=call.id or new_message_id(),
                                        name=call.function.name,
                                        input=_arguments(call.function.arguments)))
    return AnthropicMessage(
        id=new_message_id(), type="message", role="assistant", model=model,
        content=list(content),
        stop_reason=STOP_REASONS.get(choice.finish_reason or "stop", "end_turn"),
        stop_sequence=None, usage=message_usage(result.usage))
