"""A stream of chat-completion chunks as Anthropic's Messages event sequence.

``message_start``, ``ping``, then per content block ``content_block_start``, its deltas
(``text_delta`` or ``input_json_delta``) and ``content_block_stop``; at the end
``message_delta`` with the stop reason and usage, then ``message_stop``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Literal, TypeAlias, TypedDict

from inferd.anthropic.translate import STOP_REASONS, message_usage, new_message_id
from inferd.jsontypes import JsonObject
from inferd.schemas.answers import usage_of
from inferd.schemas.chunks import Chunk, FunctionDelta, ToolCallDelta


class TextBlock(TypedDict):
    type: Literal["text"]
    text: str


class ToolUseBlock(TypedDict):
    type: Literal["tool_use"]
    id: str
    name: str
    input: JsonObject


class TextDelta(TypedDict):
    type: Literal["text_delta"]
    text: str


class InputJsonDelta(TypedDict):
    type: Literal["input_json_delta"]
    partial_json: str


class MessageUsage(TypedDict):
    input_tokens: int
    output_tokens: int


class StartedMessage(TypedDict):
    id: str
    type: Literal["message"]
    role: Literal["assistant"]
    model: str
    content: list[TextBlock | ToolUseBlock]
    stop_reason: None
    stop_sequence: None
    usage: MessageUsage


class MessageStart(TypedDict):
    type: Literal["message_start"]
    message: StartedMessage


class Ping(TypedDict):
    type: Literal["ping"]


class BlockStart(TypedDict):
    type: Literal["content_block_start"]
    index: int
    content_block: TextBlock | ToolUseBlock


class BlockDelta(TypedDict):
    type: Literal["content_block_delta"]
    index: int
    delta: TextDelta | InputJsonDelta


class BlockStop(TypedDict):
    type: Literal["content_block_stop"]
    index: int


class StopDelta(TypedDict):
    stop_reason: str
    stop_sequence: None


class MessageDelta(TypedDict):
    type: Literal["message_delta"]
    delta: StopDelta
    usage: JsonObject  # ``AnthropicUsage`` as sent


class MessageStop(TypedDict):
    type: Literal["message_stop"]


Event: TypeAlias = tuple[str, MessageStart | Ping | BlockStart | BlockDelta | BlockStop
                         | MessageDelta | MessageStop]


class _Blocks:
    """The content block being written, and the index of the next one."""

    def __init__(self) -> None:
        self.index = -1
        self.kind: str | None = None  # "text" or "tool_use" while a block is open
        self.tool_index: int | None = None  # the chat chunk's index of the open tool call

    def close(self) -> list[Event]:
        if self.kind is None:
            return []
        self.kind = None
        return [("content_block_stop", {"type": "content_block_stop", "index": self.index})]

    def open(self, kind: str, block: TextBlock | ToolUseBlock) -> list[Event]:
        out = self.close()
        self.index += 1
        self.kind = kind
        out.append(("content_block_start", {"type": "content_block_start", "index": self.index,
                                            "content_block": block}))
        return out

    def delta(self, delta: TextDelta | InputJsonDelta) -> Event:
        return ("content_block_delta", {"type": "content_block_delta", "index": self.index,
                                        "delta": delta})

    def text(self, text: str) -> list[Event]:
        out = [] if self.kind == "text" else self.open("text", {"type": "text", "text": ""})
        return [*out, self.delta({"type": "text_delta", "text": text})]

    def tool(self, call: ToolCallDelta) -> list[Event]:
        out: list[Event] = []
        function = call.get("function") or FunctionDelta()
        if call.get("id") or self.kind != "tool_use" or call.get("index") != self.tool_index:
            self.tool_index = call.get("index")
            out += self.open("tool_use", {"type": "tool_use", "id": call.get("id") or
                                          new_message_id(), "name": function.get("name", ""),
                                          "input": {}})
        if function.get("arguments"):
            out.append(self.delta({"type": "input_json_delta",
                                   "partial_json": function["arguments"]}))
        return out


def message_start(model: str) -> Event:
    return ("message_start", {"type": "message_start", "message": {
        "id": new_message_id(), "type": "message", "role": "assistant", "model": model,
        "content": [], "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 0, "output_tokens": 0}}})


async def events(chunks: AsyncIterator[Chunk], model: str) -> AsyncIterator[Event]:
    """Anthropic's events for a started chat stream (errors propagate to the caller)."""
    yield message_start(model)
    yield ("ping", {"type": "ping"})
    blocks = _Blocks()
    finish = "stop"
    usage: object = None  # the usage chunk's, as sent
    async for chunk in chunks:
        usage = chunk.get("usage") or usage
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if content:
                for event in blocks.text(content):
                    yield event
            for call in delta.get("tool_calls") or []:
                for event in blocks.tool(call):
                    yield event
            finish = choice.get("finish_reason") or finish
    for event in blocks.close():
        yield event
    yield ("message_delta", {"type": "message_delta",
                             "delta": {"stop_reason": STOP_REASONS.get(finish, "end_turn"),
                                       "stop_sequence": None},
                             "usage": message_usage(usage_of(usage)).wire()})
    yield ("message_stop", {"type": "message_stop"})
