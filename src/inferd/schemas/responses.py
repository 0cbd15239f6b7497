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
from typing import Annotated, Literal, Required, TypeAlias, TypedDict

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from inferd.errors import InvalidRequest
from inferd.jsontypes import JsonObject, JsonValue
from inferd.schemas.answers import ChatCompletion, Usage
from inferd.schemas.openai import MAX_TOKENS, ChatCompletionRequest, ModelName

# An item (input, output or a conversation's) as a client sent it or inferd built it: the keys
# inferd reads are narrowed where they are read, the others are kept and sent back as they are.
# The Response object is a JSON object too: it echoes the request's tools, text format and
# metadata, and is stored and read back (rows of earlier versions, a background job's result).
Item: TypeAlias = JsonObject


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


class TextFormat(BaseModel):
    """``text.format``: plain text, any JSON object, or JSON following a schema."""

    model_config = ConfigDict(extra="allow")
    type: Literal["text", "json_object", "json_schema"] = "text"
    name: str | None = None
    schema_: JsonObject | None = Field(default=None, alias="schema")
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
                    str | JsonObject] | None = None


class ResponseCreateRequest(BaseModel):
    """``POST /v1/responses``."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)
    model: ModelName
    input: str | list[Item] | None = None  # required unless ``prompt`` holds messages
    instructions: str | None = None
    max_output_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    tools: list[JsonObject] | None = None
    tool_choice: str | JsonObject | None = None
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


# -------------------------------------------------------------------------- the answers

class Deleted(TypedDict):
    """A deleted object (a response, a conversation, a prompt)."""

    id: str
    object: str
    deleted: bool


class ConversationObject(TypedDict):
    id: str
    object: Literal["conversation"]
    created_at: int
    metadata: dict[str, str]


class ItemPage(TypedDict):
    """One page of items; ``first_id`` and ``last_id`` as the items hold them."""

    object: Literal["list"]
    data: list[Item]
    first_id: JsonValue
    last_id: JsonValue
    has_more: bool


class InputTokens(TypedDict):
    object: Literal["response.input_tokens"]
    input_tokens: int


def item_page(items: list[Item], has_more: bool) -> ItemPage:
    return {"object": "list", "data": items,
            "first_id": items[0]["id"] if items else None,
            "last_id": items[-1]["id"] if items else None, "has_more": has_more}


# -------------------------------------------------------------------------- input → messages
# The chat request built from the items (validated as a ``ChatCompletionRequest``): values
# taken from an item as it was sent are ``JsonValue``, checked by that validation.

class ChatText(TypedDict):
    type: Literal["text"]
    text: str


class ChatImageUrl(TypedDict):
    url: JsonValue


class ChatImage(TypedDict):
    type: Literal["image_url"]
    image_url: ChatImageUrl


ChatPart: TypeAlias = ChatText | ChatImage


class ChatFunction(TypedDict):
    name: JsonValue
    arguments: JsonValue


class ChatToolCall(TypedDict):
    id: JsonValue
    type: Literal["function"]
    function: ChatFunction


class ChatMessageBody(TypedDict, total=False):
    role: Required[str]
    content: str | list[ChatPart]
    tool_calls: list[ChatToolCall]
    tool_call_id: JsonValue


class ChatTool(TypedDict):
    type: Literal["function"]
    function: JsonObject


class ChatBody(TypedDict):
    """The chat request's fields a Responses request sets (None: left out)."""

    model: str
    messages: list[ChatMessageBody]
    temperature: float | None
    top_p: float | None
    max_tokens: int | None
    tools: list[ChatTool] | None
    tool_choice: JsonValue
    response_format: JsonObject | None


def _text_of(content: JsonValue, param: str) -> str | list[ChatPart]:
    """A message item's content as chat content (a string, or parts when there are images)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InvalidRequest("A message's content must be a string or a list of parts.",
                             param=param)
    parts: list[ChatPart] = []
    texts: list[str] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if isinstance(part, dict) and kind in ("input_text", "output_text", "text"):
            texts.append(str(part.get("text", "")))
            parts.append({"type": "text", "text": texts[-1]})
        elif isinstance(part, dict) and kind == "input_image" and part.get("image_url"):
            parts.append({"type": "image_url", "image_url": {"url": part["image_url"]}})
        elif isinstance(part, dict) and kind == "refusal":
            texts.append(str(part.get("refusal", "")))
            parts.append({"type": "text", "text": texts[-1]})
        else:
            raise InvalidRequest(f"Content parts of type '{kind}' are not supported.",
                                 param=param, code="unsupported_content")
    if len(texts) == len(parts):
        return "".join(texts)
    return parts


def normalize_input(value: str | list[Item]) -> list[Item]:
    """The request's input as items (a string is one user message)."""
    if isinstance(value, str):
        return [{"type": "message", "role": "user",
                 "content": [{"type": "input_text", "text": value}]}]
    return [dict(item) for item in value]


def items_to_messages(items: list[Item], name: str = "input") -> list[ChatMessageBody]:
    """Conversation items as chat messages; consecutive function calls share one message.
    ``name``: the request field the items came from (errors name ``name[i]``)."""
    messages: list[ChatMessageBody] = []
    for i, item in enumerate(items):
        param = f"{name}[{i}]"
        if not isinstance(item, dict):
            raise InvalidRequest("An item must be an object.", param=param)
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if not isinstance(role, str) or role not in ("user", "assistant", "system",
                                                         "developer"):
                raise InvalidRequest(f"Unknown role '{role}'.", param=f"{param}.role")
            messages.append({"role": role,
                             "content": _text_of(item.get("content"), f"{param}.content")})
        elif kind == "function_call":
            call: ChatToolCall = {"id": item.get("call_id"), "type": "function",
                                  "function": {"name": item.get("name"),
                                               "arguments": item.get("arguments", "")}}
            last = messages[-1] if messages else None
            calls = last.get("tool_calls") if last is not None else None
            if last is not None and last["role"] == "assistant" and calls:
                calls.append(call)
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


def _chat_tools(tools: list[JsonObject] | None) -> list[ChatTool] | None:
    if not tools:
        return None
    out: list[ChatTool] = []
    for i, tool in enumerate(tools):
        if tool.get("type") != "function":
            raise InvalidRequest(f"Tools of type '{tool.get('type')}' are not supported by "
                                 "this server; use function tools.", param=f"tools[{i}].type",
                                 code="unsupported_tool")
        function: JsonObject = {k: tool[k] for k in ("name", "description", "parameters",
                                                     "strict")
                                if tool.get(k) is not None}
        out.append({"type": "function", "function": function})
    return out


def _chat_tool_choice(choice: str | JsonObject | None) -> JsonValue:
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "function", "function": {"name": choice.get("name")}}
    return choice


def _response_format(text: TextConfig | None) -> JsonObject | None:
    fmt = text.format if text is not None else None
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return {"type": "json_object"}
    schema: JsonObject = {"name": fmt.name or "response", "schema": fmt.schema_ or {}}
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
    body: ChatBody = {"model": request.model, "messages": messages,
                      "temperature": request.temperature, "top_p": request.top_p,
                      "max_tokens": request.max_output_tokens,
                      "tools": _chat_tools(request.tools),
                      "tool_choice": _chat_tool_choice(request.tool_choice),
                      "response_format": _response_format(request.text)}
    fields = {k: v for k, v in body.items() if v is not None}
    if request.parallel_tool_calls is not None and request.tools:
        fields["parallel_tool_calls"] = request.parallel_tool_calls
    return ChatCompletionRequest.model_validate(fields)


# -------------------------------------------------------------------------- the Response object

def base_response(request: ResponseCreateRequest, response_id: str,
                  status: str) -> JsonObject:
    """The Response object before any output: what ``response.created`` carries."""
    text = request.text.model_dump(by_alias=True, exclude_none=True) if request.text else None
    response: JsonObject = {
        "id": response_id, "object": "response", "created_at": int(time.time()),
        "status": status, "background": bool(request.background), "error": None,
        "incomplete_details": None, "instructions": request.instructions,
        "max_output_tokens": request.max_output_tokens, "model": request.model,
        "output": [], "parallel_tool_calls": request.parallel_tool_calls is not False,
        "previous_response_id": request.previous_response_id,
        "store": request.store is not False, "temperature": request.temperature,
        "text": text or {"format": {"type": "text"}},
        "tool_choice": request.tool_choice or "auto", "tools": list(request.tools or []),
        "top_p": request.top_p, "truncation": "disabled",
        "metadata": dict(request.metadata or {}),
    }
    if request.user is not None:
        response["user"] = request.user
    if request.conversation_id is not None:
        response["conversation"] = {"id": request.conversation_id}
    if request.prompt is not None:
        response["prompt"] = request.prompt.model_dump()
    return response


def response_usage(usage: Usage | None) -> JsonObject:
    """The Responses API's usage of a chat usage."""
    prompt = 0 if usage is None else usage.prompt_tokens
    completion = 0 if usage is None else usage.completion_tokens or 0
    cached = 0 if usage is None else usage.cached_tokens
    return {"input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
            "output_tokens": completion, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt + completion}


def output_text(text: str) -> JsonObject:
    """An ``output_text`` content part."""
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def message_item(text: str, item_id: str | None = None,
                 status: str = "completed") -> JsonObject:
    return {"type": "message", "id": item_id or new_id("msg"), "status": status,
            "role": "assistant", "content": [output_text(text)]}


def function_call_item(call_id: str, name: str, arguments: str, item_id: str | None = None,
                       status: str = "completed") -> JsonObject:
    return {"type": "function_call", "id": item_id or new_id("fc"), "call_id": call_id,
            "name": name, "arguments": arguments, "status": status}


def output_from_chat(result: ChatCompletion) -> list[Item]:
    """The output items of one (non-streamed) chat completion."""
    message = result.choices[0].message if result.choices else None
    items: list[Item] = []
    if message is not None and message.content:
        items.append(message_item(message.content))
    for call in (message.tool_calls if message is not None else None) or []:
        items.append(function_call_item(call.id or new_id("call"), call.function.name,
                                        call.function.arguments))
    if not items:
        items.append(message_item(""))
    return items


def output_items(response: JsonObject) -> list[Item]:
    """A Response object's output items."""
    output = response.get("output")
    return [item for item in output if isinstance(item, dict)] \
        if isinstance(output, list) else []


def finish(response: JsonObject, output: list[Item],
           usage: Usage | None, finish_reason: str | None) -> JsonObject:
    """``response`` completed with its output (``incomplete`` when the token limit cut it)."""
    done: JsonObject = {**response, "output": list(output), "usage": response_usage(usage),
                        "status": "completed"}
    if finish_reason == "length":
        done["status"] = "incomplete"
        done["incomplete_details"] = {"reason": "max_output_tokens"}
    return done
