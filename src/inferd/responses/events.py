"""Chat completion chunks → the Responses API's typed stream events.

``ResponseStream`` is fed the chunks of one chat stream and yields the events the ``openai``
SDK parses, in its order: ``response.created``, ``response.in_progress``, then per output item
``output_item.added`` / ``content_part.added`` / ``output_text.delta``… (or
``function_call_arguments.delta``…) / ``…done``, and ``response.completed``. Events carry no
``sequence_number``: whoever sends or stores them numbers them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal, TypeAlias, TypedDict

from inferd.errors import ErrorObject
from inferd.jsontypes import JsonObject, JsonValue
from inferd.schemas.answers import Usage, usage_of
from inferd.schemas.chunks import Chunk, FunctionDelta, ToolCallDelta
from inferd.schemas.responses import (
    Item,
    finish,
    function_call_item,
    message_item,
    new_id,
    output_text,
)


class _Numbered(TypedDict, total=False):
    sequence_number: int  # set by whoever sends or stores the event


class ResponseEvent(_Numbered):
    type: Literal["response.created", "response.in_progress", "response.completed",
                  "response.incomplete", "response.failed"]
    response: JsonObject


class OutputItemEvent(_Numbered):
    type: Literal["response.output_item.added", "response.output_item.done"]
    output_index: int
    item: Item


class ContentPartEvent(_Numbered):
    type: Literal["response.content_part.added", "response.content_part.done"]
    item_id: str
    output_index: int
    content_index: int
    part: JsonObject


class TextDeltaEvent(_Numbered):
    type: Literal["response.output_text.delta"]
    item_id: str
    output_index: int
    content_index: int
    delta: str
    logprobs: list[JsonValue]


class TextDoneEvent(_Numbered):
    type: Literal["response.output_text.done"]
    item_id: str
    output_index: int
    content_index: int
    text: str
    logprobs: list[JsonValue]


class ArgumentsDeltaEvent(_Numbered):
    type: Literal["response.function_call_arguments.delta"]
    item_id: str
    output_index: int
    delta: str


class ArgumentsDoneEvent(_Numbered):
    type: Literal["response.function_call_arguments.done"]
    item_id: str
    output_index: int
    name: str
    arguments: str


Event: TypeAlias = (ResponseEvent | OutputItemEvent | ContentPartEvent | TextDeltaEvent
                    | TextDoneEvent | ArgumentsDeltaEvent | ArgumentsDoneEvent)


@dataclass
class _Call:
    output_index: int
    item_id: str
    call_id: str
    name: str
    arguments: str = ""


@dataclass
class ResponseStream:
    """The state of one streamed response; ``response`` is the final object once finished."""

    response: JsonObject
    output: list[Item] = field(default_factory=list)
    _text: str = ""
    _text_index: int | None = None
    _text_id: str = ""
    _calls: dict[int, _Call] = field(default_factory=dict)
    _usage: Usage | None = None
    _finish_reason: str | None = None

    def start(self) -> Iterator[Event]:
        created: JsonObject = {**self.response, "status": "in_progress"}
        yield {"type": "response.created", "response": created}
        yield {"type": "response.in_progress", "response": created}

    def feed(self, chunk: Chunk) -> Iterator[Event]:
        if chunk.get("usage"):
            self._usage = usage_of(chunk["usage"])
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if content:
                yield from self._text_delta(content)
            for call in delta.get("tool_calls") or []:
                yield from self._call_delta(call)
            if choice.get("finish_reason"):
                self._finish_reason = choice["finish_reason"]

    def _text_delta(self, text: str) -> Iterator[Event]:
        if self._text_index is None:
            self._text_index = len(self.output)
            self._text_id = new_id("msg")
            item = message_item("", self._text_id, status="in_progress")
            item["content"] = []
            self.output.append(item)
            yield {"type": "response.output_item.added", "output_index": self._text_index,
                   "item": item}
            yield {"type": "response.content_part.added", "item_id": self._text_id,
                   "output_index": self._text_index, "content_index": 0,
                   "part": output_text("")}
        self._text += text
        yield {"type": "response.output_text.delta", "item_id": self._text_id,
               "output_index": self._text_index, "content_index": 0, "delta": text,
               "logprobs": []}

    def _call_delta(self, delta: ToolCallDelta) -> Iterator[Event]:
        index = delta.get("index", 0)
        function = delta.get("function") or FunctionDelta()
        call = self._calls.get(index)
        if call is None:
            call = _Call(len(self.output), new_id("fc"), delta.get("id") or new_id("call"),
                         function.get("name") or "")
            self._calls[index] = call
            item = function_call_item(call.call_id, call.name, "", call.item_id,
                                      status="in_progress")
            self.output.append(item)
            yield {"type": "response.output_item.added", "output_index": call.output_index,
                   "item": item}
        arguments = function.get("arguments") or ""
        if arguments:
            call.arguments += arguments
            yield {"type": "response.function_call_arguments.delta", "item_id": call.item_id,
                   "output_index": call.output_index, "delta": arguments}

    def finish(self) -> Iterator[Event]:
        """The closing events; afterwards ``response`` holds the finished object."""
        if self._text_index is None and not self._calls:
            yield from self._text_delta("")
        if self._text_index is not None:
            index = self._text_index
            part = output_text(self._text)
            item = message_item(self._text, self._text_id)
            item["content"] = [part]
            yield {"type": "response.output_text.done", "item_id": self._text_id,
                   "output_index": index, "content_index": 0, "text": self._text,
                   "logprobs": []}
            yield {"type": "response.content_part.done", "item_id": self._text_id,
                   "output_index": index, "content_index": 0, "part": part}
            self.output[index] = item
            yield {"type": "response.output_item.done", "output_index": index, "item": item}
        for call in self._calls.values():
            item = function_call_item(call.call_id, call.name, call.arguments, call.item_id)
            yield {"type": "response.function_call_arguments.done", "item_id": call.item_id,
                   "output_index": call.output_index, "name": call.name,
                   "arguments": call.arguments}
            self.output[call.output_index] = item
            yield {"type": "response.output_item.done", "output_index": call.output_index,
                   "item": item}
        self.response = finish(self.response, self.output, self._usage, self._finish_reason)
        yield {"type": ("response.incomplete" if self.response["status"] == "incomplete"
                        else "response.completed"), "response": self.response}

    @property
    def usage(self) -> Usage | None:
        return self._usage


# Response error codes are an enum in OpenAI's API; inferd's own code stays in the message.
ERROR_CODES = frozenset({"server_error", "rate_limit_exceeded", "invalid_prompt"})


def failed_event(response: JsonObject, error: ErrorObject | JsonObject,
                 status: str = "failed") -> ResponseEvent:
    """The last event of a response that did not complete."""
    code = error.get("code") or "server_error"
    message = str(error.get("message", ""))
    if code not in ERROR_CODES:
        # a limit's refusal (a rate, a token or money budget) is OpenAI's rate limit code
        kind = "rate_limit_exceeded" if error.get("type") == "rate_limit_error" else "server_error"
        code, message = kind, f"{message} ({code})"
    return {"type": "response.failed",
            "response": {**response, "status": status,
                         "error": {"code": code, "message": message}}}
