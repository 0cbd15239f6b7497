"""Stream chunks: the ``chat.completion.chunk`` and ``text_completion`` objects a stream yields.

One is built per token and passed through as a plain dict, so its shape is a ``TypedDict``
(nothing is validated on the way). Every key may be missing: a replica's chunk is forwarded as
it came, and its fields beyond these are kept (``system_fingerprint``, ...). A chat chunk's
choices carry a ``delta``, a text completion's a ``text``; the last chunk of every stream has
``"choices": []`` and the ``usage``.
"""

from __future__ import annotations

from typing import NotRequired, TypedDict

from inferd.jsontypes import JsonObject, JsonValue


class FunctionDelta(TypedDict, total=False):
    """A piece of a tool call's function: its name (first piece), then its arguments' text."""

    name: str
    arguments: str


class ToolCallDelta(TypedDict, total=False):
    """A piece of tool call ``index``; the first piece has its ``id`` and ``type``."""

    index: int
    id: str
    type: str
    function: FunctionDelta


class Delta(TypedDict, total=False):
    """What a chat chunk adds to a choice's message."""

    role: str
    content: str | None
    refusal: str | None
    tool_calls: list[ToolCallDelta]
    function_call: FunctionDelta  # the legacy ``functions`` shape (``legacy_stream``)


class ChunkChoice(TypedDict, total=False):
    index: int
    delta: Delta  # a chat chunk's
    text: str  # a text completion chunk's
    logprobs: JsonObject | None
    finish_reason: str | None


class CachedTokens(TypedDict):
    cached_tokens: int


class UsageDict(TypedDict):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: NotRequired[CachedTokens]


class Chunk(TypedDict, total=False):
    id: str
    object: str
    created: int
    model: str
    system_fingerprint: JsonValue
    choices: list[ChunkChoice]
    usage: UsageDict | None
