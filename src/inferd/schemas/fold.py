"""Stream chunks folded back into the body the same request answers unstreamed.

A job runs its chat or text completion as a stream (its tokens reach the job's events while
they are generated) and stores the folded body as its result, so a job answers what a sync
request would: every choice, its tool calls (argument deltas joined by call index), its
logprobs and finish reason, and the usage the engine reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NotRequired, TypedDict

from inferd.jsontypes import JsonObject
from inferd.schemas.answers import ChatCompletion, TextCompletion, Usage, usage_of
from inferd.schemas.chunks import Chunk, FunctionDelta, ToolCallDelta


class _Function(TypedDict):
    name: str
    arguments: str


class _Call(TypedDict):
    """A tool call, its pieces joined."""

    id: str
    type: str
    function: _Function


class _Message(TypedDict):
    role: str
    content: str | None
    refusal: None
    tool_calls: NotRequired[list[_Call]]


@dataclass
class _Choice:
    text: str = ""
    calls: dict[int, _Call] = field(default_factory=dict)
    logprobs: JsonObject | None = None
    finish_reason: str | None = None


@dataclass
class ChunkFold:
    """Feed it every chunk of one stream; ``chat()`` or ``completion()`` is the body."""

    id: str = ""
    created: int = 0
    usage: Usage | None = None
    choices: dict[int, _Choice] = field(default_factory=dict)
    extra: JsonObject = field(default_factory=dict)  # e.g. system_fingerprint

    def feed(self, chunk: Chunk) -> None:
        self.id, self.created = chunk.get("id") or self.id, chunk.get("created") or self.created
        if chunk.get("system_fingerprint"):
            self.extra["system_fingerprint"] = chunk["system_fingerprint"]
        if chunk.get("usage"):
            self.usage = usage_of(chunk["usage"])
        for given in chunk.get("choices") or []:
            choice = self.choices.setdefault(int(given.get("index") or 0), _Choice())
            delta = given.get("delta")
            text = (delta or {}).get("content") if delta is not None else given.get("text")
            choice.text += text or ""
            for call in (delta or {}).get("tool_calls") or []:
                _add_call(choice.calls, call)
            logprobs = given.get("logprobs")
            if logprobs:
                choice.logprobs = _add_logprobs(choice.logprobs, logprobs)
            if given.get("finish_reason"):
                choice.finish_reason = given["finish_reason"]

    def _usage(self) -> Usage:
        return self.usage or Usage.of(0, 0)

    def chat(self, model: str) -> ChatCompletion:
        """The chat completion the stream amounts to (its chunks' shapes validated)."""
        choices = []
        for index, choice in sorted(self.choices.items()):
            calls = [choice.calls[i] for i in sorted(choice.calls)]
            message: _Message = {"role": "assistant",
                                 "content": choice.text if choice.text or not calls else None,
                                 "refusal": None}
            if calls:
                message["tool_calls"] = calls
            choices.append({"index": index, "message": message, "logprobs": choice.logprobs,
                            "finish_reason": choice.finish_reason or "stop"})
        return ChatCompletion.model_validate({
            "id": self.id, "object": "chat.completion", "created": self.created,
            "model": model, "choices": choices, "usage": self._usage(), **self.extra})

    def completion(self, model: str) -> TextCompletion:
        """The text completion the stream amounts to."""
        choices = [{"text": choice.text, "index": index, "logprobs": choice.logprobs,
                    "finish_reason": choice.finish_reason or "stop"}
                   for index, choice in sorted(self.choices.items())]
        return TextCompletion.model_validate({
            "id": self.id, "object": "text_completion", "created": self.created,
            "model": model, "choices": choices, "usage": self._usage(), **self.extra})


def _add_call(calls: dict[int, _Call], delta: ToolCallDelta) -> None:
    """One ``delta.tool_calls`` item: the first of a call has its id and name."""
    index = int(delta.get("index") or 0)
    call = calls.setdefault(index, {"id": "", "type": "function",
                                    "function": {"name": "", "arguments": ""}})
    if delta.get("id"):
        call["id"] = delta["id"]
    if delta.get("type"):
        call["type"] = delta["type"]
    function = delta.get("function") or FunctionDelta()
    call["function"]["name"] += function.get("name") or ""
    call["function"]["arguments"] += function.get("arguments") or ""


def _add_logprobs(kept: JsonObject | None, given: JsonObject) -> JsonObject:
    """Chat logprobs (``content`` entries) or the legacy completions shape (parallel lists)."""
    if kept is None:
        return {key: list(value) if isinstance(value, list) else value
                for key, value in given.items()}
    for key, value in given.items():
        if isinstance(value, list):
            old = kept.get(key)
            kept[key] = (old if isinstance(old, list) else []) + value
    return kept
