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
from typing import Any

from inferd.schemas.answers import Usage, usage_of
from inferd.schemas.chunks import Chunk, FunctionDelta, ToolCallDelta
from inferd.schemas.responses import finish, function_call_item, message_item, new_id

Event = dict[str, Any]


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

    response: dict[str, Any]
    output: list[dict[str, Any]] = field(default_factory=list)
    _text: str = ""
    _text_index: int | None = None
    _calls: dict[int, _Call] = field(default_factory=dict)
    _usage: Usage | None = None
    _finish_reason: str | None = None

    def start(self) -> Iterator[Event]:
        created = {**self.response, "status": "in_progress"}
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
            item = message_item("", new_id("msg"), status="in_progress")
            item["content"] = []
            self.output.append(item)
            yield {"type": "response.output_item.added", "output_index": self._text_index,
                   "item": item}
            yield {"type": "response.content_part.added", "item_id": item["id"],
                   "output_index": self._text_index, "content_index": 0,
                   "part": {"type": "output_text", "text": "", "annotations": [],
                            "logprobs": []}}
        self._text += text
        yield {"type": "response.output_text.delta", "item_id": self.output[self._text_index]["id"],
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
            item = message_item(self._text, self.output[index]["id"])
            part = item["content"][0]
            yield {"type": "response.output_text.done", "item_id": item["id"],
                   "output_index": index, "content_index": 0, "text": self._text,
                   "logprobs": []}
            yield {"type": "response.content_part.done", "item_id": item["id"],
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
        kind = ("response.incomplete" if self.response["status"] == "incomplete"
                else "response.completed")
        yield {"type": kind, "response": self.response}

    @property
    def usage(self) -> Usage | None:
        return self._usage


# Response error codes are an enum in OpenAI's API; inferd's own code stays in the message.
ERROR_CODES = frozenset({"server_error", "rate_limit_exceeded", "invalid_prompt"})


def failed_event(response: dict[str, Any], error: dict[str, Any],
                 status: str = "failed") -> Event:
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
