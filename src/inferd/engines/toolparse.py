"""The model's text back into OpenAI ``tool_calls``: all at once, or piece by piece.

The streamed form is what the SDKs expect: per call a first delta with ``index``, ``id``,
``type`` and ``function.name`` (and empty ``arguments``), then deltas that carry the arguments
incrementally; their concatenation is the arguments' JSON text.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from inferd.engines.tools import TOOL_CLOSE, TOOL_OPEN

_BLOCK = re.compile(re.escape(TOOL_OPEN) + r"\s*(.*?)\s*" + re.escape(TOOL_CLOSE), re.DOTALL)
_HEAD = re.compile(r'\s*' + re.escape(TOOL_OPEN) +
                   r'\s*\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"arguments"\s*:\s*(?=\S)',
                   re.DOTALL)
# The shortest text that follows a call's arguments: the object's "}" and the closing tag.
_TAIL = len("}" + TOOL_CLOSE)


def _call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


def parse(text: str) -> tuple[str | None, list[dict[str, Any]]]:
    """``(content, tool_calls)`` of a whole answer; a call cut short (max_tokens) is dropped."""
    if not text.lstrip().startswith(TOOL_OPEN):
        return text, []
    calls = []
    for match in _BLOCK.finditer(text):
        try:
            call = json.loads(match.group(1))
        except ValueError:
            continue
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            continue
        calls.append({"id": _call_id(), "type": "function",
                      "function": {"name": call["name"],
                                   "arguments": json.dumps(call.get("arguments", {}))}})
    if not calls:
        return text, []
    return None, calls


def with_tool_calls(choice: dict[str, Any], text: str) -> None:
    """Rewrite a chat completion's choice whose text holds calls into ``tool_calls``."""
    content, calls = parse(text)
    if not calls:
        return
    choice["message"]["content"] = content
    choice["message"]["tool_calls"] = calls
    if choice["finish_reason"] == "stop":
        choice["finish_reason"] = "tool_calls"


class ToolStream:
    """Feeds on the streamed text; returns the deltas to send for each piece."""

    def __init__(self) -> None:
        self.text = ""
        self.mode: str | None = None  # None until the first characters decide: text or tools
        self.pos = 0  # where the current call starts (tools mode)
        self.index = -1  # index of the current call; -1 before the first
        self.args_start: int | None = None  # where the current call's arguments start
        self.sent = 0  # characters of the current call's arguments already sent

    @property
    def called(self) -> bool:
        return self.index >= 0

    def feed(self, piece: str) -> list[dict[str, Any]]:
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

    def finish(self) -> list[dict[str, Any]]:
        """Deltas for what is left at the end (text that only looked like a call's start)."""
        if self.mode is None and self.text:
            self.mode = "text"
            return [{"content": self.text}]
        return []

    def _delta(self, call: dict[str, Any]) -> dict[str, Any]:
        return {"tool_calls": [{"index": self.index, **call}]}

    def _calls(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while True:
            if self.args_start is None:
                head = _HEAD.match(self.text, self.pos)
                if head is None:
                    return out
                self.index += 1
                self.args_start, self.sent = head.end(), 0
                name = json.loads(f'"{head.group(1)}"')
                out.append(self._delta({"id": _call_id(), "type": "function",
                                        "function": {"name": name, "arguments": ""}}))
            close = self.text.find(TOOL_CLOSE, self.args_start)
            if close < 0:
                # Hold back what may turn out to be the call's closing "}" and tag.
                held = self.text[self.args_start:len(self.text) - _TAIL]
                safe = len(held.rstrip(" \t\r\n}"))
                if safe > self.sent:
                    chunk = self.text[self.args_start + self.sent:self.args_start + safe]
                    self.sent = safe
                    out.append(self._delta({"function": {"arguments": chunk}}))
                return out
            raw = self.text[self.args_start:close].rstrip()
            raw = raw[:-1].rstrip() if raw.endswith("}") else raw
            if len(raw) > self.sent:
                out.append(self._delta({"function": {"arguments": raw[self.sent:]}}))
            self.pos, self.args_start = close + len(TOOL_CLOSE), None
