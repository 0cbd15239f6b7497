"""The Responses API's wire models, and its translation onto chat completions.

A Responses request becomes one ``ChatCompletionRequest`` (input items → messages, function
tools → chat tools, ``text.format`` → ``response_format``), so it runs on every engine the
router knows. What comes back (a chat completion or its chunks) is turned into the Response
object and its typed stream events by ``inferd.responses.events``.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from inferd.errors import InvalidRequest
from inferd.schemas.answers import ChatCompletion, Usage
from inferd.schemas.openai import MAX_TOKENS, ChatCompletionRequest, ModelName

Item = dict[str, Any]


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


class TextFormat(BaseModel):
    """``text.format``: plain text, any JSON object, or JSON following a schema."""

    model_config = ConfigDict(extra="allow")
    type: Literal["text", "json_object", "json_schema"] = "text"
    name: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None
    description: str | None = None


class TextConfig(BaseModel):
    model_config = ConfigDict(extra="allow")
    format: TextFormat | None = None


ObjectId = Annotated[str, StringConstraints(min_length=1, max_length=64)]
# OpenAI's metadata: up to 16 pairs, keys up to 64 characters, values up to 512.
Metadata = Annotated[dict[Annotated[str, StringConstraints(max_length=64)],
                          Annotated[str, StringConstraints(max_length=512)]],
                     Field(max_length=16)]


class ConversationRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: ObjectId


class PromptRef(BaseModel):
    """``prompt``: a stored template (``/admin/v1/prompts``), its version (the latest when
    left out) and the values of its ``{{variables}}``."""

    model_config = ConfigDict(extra="forbid")
    id: ObjectId
    version: Annotated[str, StringConstraints(pattern=r"^[0-9]{1,9}$")] | None = None
    variables: dict[Annotated[str, StringConstraints(max_length=64)],
                    str | dict[str, Any]] | None = None


class ResponseCreateRequest(BaseModel):
    """``POST /v1/responses``."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)
    model: ModelName
    input: str | list[Item] | None = None  # required unless ``prompt`` holds messages
    instructions: str | None = None
    max_output_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    text: TextConfig | None = None
    stream: bool | None = False
    background: bool | None = False
    store: bool | None = True
    previous_response_id: str | None = Field(default=None, max_length=64)
    conversation: ObjectId | ConversationRef | None = None
    prompt: PromptRef | None = None
    metadata: dict[str, str] | None = None
    user: str | None = None

    @property
    def conversation_id(self) -> str | None:
        if isinstance(self.conversation, ConversationRef):
            return self.conversation.id
        return self.conversation


class InputTokensRequest(ResponseCreateRequest):
    """``POST /v1/responses/input_tokens``: what a create request would send the model."""

    model: ModelName | None = None  # type: ignore[assignment]


class ConversationCreate(BaseModel):
    """``POST /v1/conversations``."""

    model_config = ConfigDict(extra="forbid")
    items: list[Item] | None = Field(default=None, max_length=20)
    metadata: Metadata | None = None


class ConversationUpdate(BaseModel):
    """``POST /v1/conversations/{id}``: its metadata, replaced."""

    model_config = ConfigDict(extra="forbid")
    metadata: Metadata


class ConversationItemsCreate(BaseModel):
    """``POST /v1/conversations/{id}/items``."""

    model_config = ConfigDict(extra="forbid")
    items: list[Item] = Field(min_length=1, max_length=20)


class PromptTemplate(BaseModel):
    """A version of a prompt template: instructions and messages put before the request's
    input; ``{{name}}`` in their text is replaced by the variable ``name``."""

    model_config = ConfigDict(extra="forbid")
    instructions: str | None = Field(default=None, max_length=1_000_000)
    input: list[Item] | None = Field(default=None, max_length=100)


class PromptCreate(PromptTemplate):
    """``POST /admin/v1/prompts``: a prompt and its version 1. It belongs to ``key_id`` (the
    key that may use it; by default the admin key that creates it)."""

    name: str = Field(min_length=1, max_length=191)
    key_id: int | None = Field(default=None, ge=1)


# -------------------------------------------------------------------------- input → messages

def _text_of(content: Any, param: str) -> str | list[dict[str, Any]]:
    """A message item's content as chat content (a string, or parts when there are images)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InvalidRequest("A message's content must be a string or a list of parts.",
                             param=param)
    parts: list[dict[str, Any]] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text"):
            parts.append({"type": "text", "text": str(part.get("text", ""))})
        elif kind == "input_image" and part.get("image_url"):
            parts.append({"type": "image_url", "image_url": {"url": part["image_url"]}})
        elif kind == "refusal":
            parts.append({"type": "text", "text": str(part.get("refusal", ""))})
        else:
            raise InvalidRequest(f"Content parts of type '{kind}' are not supported.",
                                 param=param, code="unsupported_content")
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)
    return parts


def normalize_input(value: str | list[Item]) -> list[Item]:
    """The request's input as items (a string is one user message)."""
    if isinstance(value, str):
        return [{"type": "message", "role": "user",
                 "content": [{"type": "input_text", "text": value}]}]
    return [dict(item) for item in value]


def items_to_messages(items: list[Item], name: str = "input") -> list[dict[str, Any]]:
    """Conversation items as chat messages; consecutive function calls share one message.
    ``name``: the request field the items came from (errors name ``name[i]``)."""
    messages: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        param = f"{name}[{i}]"
        if not isinstance(item, dict):
            raise InvalidRequest("An item must be an object.", param=param)
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise InvalidRequest(f"Unknown role '{role}'.", param=f"{param}.role")
            messages.append({"role": role,
                             "content": _text_of(item.get("content"), f"{param}.content")})
        elif kind == "function_call":
            call = {"id": item.get("call_id"), "type": "function",
                    "function": {"name": item.get("name"),
                                 "arguments": item.get("arguments", "")}}
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and last.get("tool_calls"):
                last["tool_calls"].append(call)
            else:
                # an empty string, not null: some servers (llama.cpp's) require text here
                messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            messages.append({"role": "tool", "tool_call_id": item.get("call_id"),
                             "content": output if isinstance(output, str)
                             else _text_of(output, f"{param}.output")})
        elif kind == "reasoning":
            continue  # nothing a chat model can take back in
        else:
            raise InvalidRequest(f"Input items of type '{kind}' are not supported.",
                                 param=f"{param}.type", code="unsupported_item")
    return messages


def _chat_tools(tools: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    if not tools:
        return None
    out = []
    for i, tool in enumerate(tools):
        if tool.get("type") != "function":
            raise InvalidRequest(f"Tools of type '{tool.get('type')}' are not supported by "
                                 "this server; use function tools.", param=f"tools[{i}].type",
                                 code="unsupported_tool")
        function = {k: tool[k] for k in ("name", "description", "parameters", "strict")
                    if tool.get(k) is not None}
        out.append({"type": "function", "function": function})
    return out


def _chat_tool_choice(choice: str | dict[str, Any] | None) -> Any:
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "function", "function": {"name": choice.get("name")}}
    return choice


def _response_format(text: TextConfig | None) -> dict[str, Any] | None:
    fmt = text.format if text is not None else None
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return {"type": "json_object"}
    schema: dict[str, Any] = {"name": fmt.name or "response", "schema": fmt.schema_ or {}}
    if fmt.strict is not None:
        schema["strict"] = fmt.strict
    return {"type": "json_schema", "json_schema": schema}


# The chat request's names of the places a schema sits, and this API's (a refusal of a schema
# names the place it was found).
_SCHEMA_PLACES = [(re.compile(r"\bresponse_format\.json_schema\.schema\b"),
                   "text.format.schema"),
                  (re.compile(r"\btools\[(\d+)\]\.function\.parameters\b"),
                   r"tools[\1].parameters")]


def own_names(error: InvalidRequest) -> InvalidRequest:
    """``error`` of the chat request, naming the Responses request's fields instead."""
    for chat_name, own in _SCHEMA_PLACES:
        error.message = chat_name.sub(own, error.message)
        if error.param is not None:
            error.param = chat_name.sub(own, error.param)
    error.args = (error.message,)
    return error


def to_chat(request: ResponseCreateRequest, items: list[Item]) -> ChatCompletionRequest:
    """The chat request that answers ``request`` given the whole conversation ``items``."""
    messages = items_to_messages(items)
    if request.instructions:
        messages.insert(0, {"role": "system", "content": request.instructions})
    if not messages:
        raise InvalidRequest("input must hold at least one item.", param="input")
    body: dict[str, Any] = {"model": request.model, "messages": messages,
                            "temperature": request.temperature, "top_p": request.top_p,
                            "max_tokens": request.max_output_tokens,
                            "tools": _chat_tools(request.tools),
                            "tool_choice": _chat_tool_choice(request.tool_choice),
                            "response_format": _response_format(request.text)}
    if request.parallel_tool_calls is not None and request.tools:
        body["parallel_tool_calls"] = request.parallel_tool_calls
    return ChatCompletionRequest.model_validate({k: v for k, v in body.items()
                                                 if v is not None})


# -------------------------------------------------------------------------- the Response object

def base_response(request: ResponseCreateRequest, response_id: str,
                  status: str) -> dict[str, Any]:
    """The Response object before any output: what ``response.created`` carries."""
    text = request.text.model_dump(by_alias=True, exclude_none=True) if request.text else None
    return {
        "id": response_id, "object": "response", "created_at": int(time.time()),
        "status": status, "background": bool(request.background), "error": None,
        "incomplete_details": None, "instructions": request.instructions,
        "max_output_tokens": request.max_output_tokens, "model": request.model,
        "output": [], "parallel_tool_calls": request.parallel_tool_calls is not False,
        "previous_response_id": request.previous_response_id,
        "store": request.store is not False, "temperature": request.temperature,
        "text": text or {"format": {"type": "text"}},
        "tool_choice": request.tool_choice or "auto", "tools": request.tools or [],
        "top_p": request.top_p, "truncation": "disabled",
        "metadata": request.metadata or {},
        **({"user": request.user} if request.user is not None else {}),
        **({"conversation": {"id": request.conversation_id}}
           if request.conversation_id is not None else {}),
        **({"prompt": request.prompt.model_dump()} if request.prompt is not None else {}),
    }


def response_usage(usage: Usage | None) -> dict[str, Any]:
    """The Responses API's usage of a chat usage."""
    prompt = 0 if usage is None else usage.prompt_tokens
    completion = 0 if usage is None else usage.completion_tokens or 0
    cached = 0 if usage is None else usage.cached_tokens
    return {"input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
            "output_tokens": completion, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt + completion}


def message_item(text: str, item_id: str | None = None,
                 status: str = "completed") -> dict[str, Any]:
    return {"type": "message", "id": item_id or new_id("msg"), "status": status,
            "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": [],
                         "logprobs": []}]}


def function_call_item(call_id: str, name: str, arguments: str, item_id: str | None = None,
                       status: str = "completed") -> dict[str, Any]:
    return {"type": "function_call", "id": item_id or new_id("fc"), "call_id": call_id,
            "name": name, "arguments": arguments, "status": status}


def output_from_chat(result: ChatCompletion) -> list[dict[str, Any]]:
    """The output items of one (non-streamed) chat completion."""
    message = result.choices[0].message if result.choices else None
    items: list[dict[str, Any]] = []
    if message is not None and message.content:
        items.append(message_item(message.content))
    for call in (message.tool_calls if message is not None else None) or []:
        items.append(function_call_item(call.id or new_id("call"), call.function.name,
                                        call.function.arguments))
    if not items:
        items.append(message_item(""))
    return items


def finish(response: dict[str, Any], output: list[dict[str, Any]],
           usage: Usage | None, finish_reason: str | None) -> dict[str, Any]:
    """``response`` completed with its output (``incomplete`` when the token limit cut it)."""
    done = {**response, "output": output, "usage": response_usage(usage),
            "status": "completed"}
    if finish_reason == "length":
        done["status"] = "incomplete"
        done["incomplete_details"] = {"reason": "max_output_tokens"}
    return done
