"""The model's text back into OpenAI ``tool_calls``: all at once, or piece by piece.

The streamed form is what the SDKs expect: per call a first delta with ``index``, ``id``,
``type`` and ``function.name`` (and empty ``arguments``), then deltas that carry the arguments
incrementally; their concatenation is the arguments' JSON text.

An answer that opens with ``<tool_call>`` is calls, never text: a call cut short by
``max_tokens`` is still reported as a call, with the arguments written so far (as OpenAI does),
and its name taken from the functions offered when the cut came before the name was whole.
Both forms read the text with the same ``ToolStream``, so they always agree.
"""

from __future__ import annotations

import contextlib
import json
import re
import uuid
from collections.abc import Iterable

from inferd.engines.tools import TOOL_CLOSE, TOOL_OPEN
from inferd.schemas.answers import ChatChoice, FunctionCall, ToolCall
from inferd.schemas.chunks import Delta, ToolCallDelta

_HEAD = re.compile(r'\s*' + re.escape(TOOL_OPEN) +
                   r'\s*\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"arguments"\s*:\s*(?=\S)',
                   re.DOTALL)
_SPACE = re.compile(r"\s+")


def _call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


class _ValueEnd:
    """Finds where a JSON value ends, reading it piece by piece (strings and nesting
    followed, so a ``}`` or a closing tag inside a string does not end it)."""

    def __init__(self) -> None:
        self.kind = ""  # "container", "string" or "scalar", from the first character
        self.depth = 0
        self.in_string = False
        self.escaped = False

    def feed(self, text: str, start: int) -> int | None:
        """Read ``text[start:]``; the index just past the value's end, or None if not yet."""
        for i in range(start, len(text)):
            c = text[i]
            if not self.kind:
                if c in "{[":
                    self.kind, self.depth = "container", 1
                elif c == '"':
                    self.kind, self.in_string = "string", True
                else:
                    self.kind = "scalar"
                continue
            if self.kind == "scalar":
                if c.isspace() or c in ",]}":
                    return i
                continue
            if self.in_string:
                if self.escaped:
                    self.escaped = False
                elif c == "\\":
                    self.escaped = True
                elif c == '"':
                    self.in_string = False
                    if self.kind == "string":
                        return i + 1
                continue
            if c == '"':
                self.in_string = True
            elif c in "{[":
                self.depth += 1
            elif c in "}]":
                self.depth -= 1
                if self.depth == 0:
                    return i + 1
        return None


def _head_prefix(name: str) -> str:
    """A call's text up to its arguments, without white space."""
    return TOOL_OPEN + '{"name":' + json.dumps(name) + ',"arguments":'


class ToolStream:
    """Feeds on the streamed text; returns the deltas to send for each piece.

    ``names`` are the functions offered: a call cut before its name was whole gets the one
    name its text can still become, if only one can.
    """

    def __init__(self, names: Iterable[str] = ()) -> None:
        self.names = list(names)
        self.text = ""
        self.mode: str | None = None  # None until the first characters decide: text or tools
        self.pos = 0  # where the current call starts (tools mode)
        self.index = -1  # index of the current call; -1 before the first
        self.args_start: int | None = None  # where the current call's arguments start
        self.args_end: int | None = None  # where they end, once known
        self.value = _ValueEnd()
        self.scanned = 0  # how far the arguments were read
        self.complete = 0  # calls whose arguments ended

    @property
    def called(self) -> bool:
        return self.index >= 0

    def feed(self, piece: str) -> list[Delta]:
        self.text += piece
        if self.mode is None:
            head = self.text.lstrip()
            if head and not (TOOL_OPEN.startswith(head) or head.startswith(TOOL_OPEN)):
                self.mode = "text"
                return [{"content": self.text}]
            if not head.startswith(TOOL_OPEN):
                return []
            self.mode = "tools"
        if self.mode == "text":
            return [{"content": piece}] if piece else []
        return self._calls()

    def finish(self) -> list[Delta]:
        """Deltas for what is left at the end: text that only looked like a call's start, or
        the first call, cut before its arguments began."""
        head = self.text.lstrip()
        if self.mode is None and head and TOOL_OPEN.startswith(head):
            self.mode = "tools"  # the opening tag, cut short: a call, not text
        if self.mode is None:
            if not self.text:
                return []
            self.mode = "text"
            return [{"content": self.text}]
        if self.mode == "tools" and self.args_start is None and not self.called:
            rest = _SPACE.sub("", self.text[self.pos:])
            if rest:
                fits = [n for n in self.names
                        if _head_prefix(n).startswith(rest) or rest.startswith(_head_prefix(n))]
                if len(fits) == 1:
                    self.index += 1
                    return [self._delta({"id": _call_id(), "type": "function",
                                         "function": {"name": fits[0], "arguments": ""}})]
        return []

    def _delta(self, call: ToolCallDelta) -> Delta:
        return {"tool_calls": [{"index": self.index, **call}]}

    def _calls(self) -> list[Delta]:
        out: list[Delta] = []
        while True:
            if self.args_start is None:
                head = _HEAD.match(self.text, self.pos)
                if head is None:
                    return out
                self.index += 1
                self.args_start = self.scanned = head.end()
                self.args_end, self.value = None, _ValueEnd()
                name = json.loads(f'"{head.group(1)}"')
                out.append(self._delta({"id": _call_id(), "type": "function",
                                        "function": {"name": name, "arguments": ""}}))
            if self.args_end is None:
                sent = self.scanned
                end = self.value.feed(self.text, self.scanned)
                self.scanned = len(self.text) if end is None else end
                if self.scanned > sent:
                    out.append(self._delta({"function": {
                        "arguments": self.text[sent:self.scanned]}}))
                if end is None:
                    return out
                self.args_end = end
                self.complete += 1
            close = self.text.find(TOOL_CLOSE, self.args_end)
            if close < 0:
                return out
            self.pos, self.args_start = close + len(TOOL_CLOSE), None


def parse(text: str, names: Iterable[str] = ()) -> tuple[str | None, list[ToolCall]]:
    """``(content, tool_calls)`` of a whole answer. A call cut short (max_tokens) is kept
    with the arguments written so far; an answer of calls has no content."""
    stream = ToolStream(names)
    deltas = stream.feed(text) + stream.finish()
    if stream.mode != "tools":
        return text, []
    calls: list[ToolCall] = []
    for delta in deltas:
        for part in delta.get("tool_calls", []):
            if "id" in part:
                calls.append(ToolCall(id=part["id"], type="function", function=FunctionCall(
                    name=part["function"]["name"], arguments=part["function"]["arguments"])))
            else:
                calls[-1].function.arguments += part["function"]["arguments"]
    for call in calls[:stream.complete]:
        function = call.function
        with contextlib.suppress(ValueError):  # else kept as written
            # the arguments the grammar let through, written the usual way
            function.arguments = json.dumps(json.loads(function.arguments))
    return None, calls


def with_tool_calls(choice: ChatChoice, text: str, names: Iterable[str] = ()) -> None:
    """Rewrite a chat completion's choice whose text holds calls into ``tool_calls``."""
    content, calls = parse(text, names)
    if content is not None:
        return
    choice.message.content = None
    if calls:
        choice.message.tool_calls = calls
        if choice.finish_reason == "stop":
            choice.finish_reason = "tool_calls"
