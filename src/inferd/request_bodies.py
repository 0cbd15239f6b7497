"""The bodies the request log keeps for a key with ``log_bodies`` (``inferd.reqlog``).

A request's body is the request as the gateway parsed it (the fields the client set); an
answer's is the JSON answer, a streamed answer assembled from its chunks into the object a
request without ``stream`` would have had (the text and tool calls of each choice joined, the
last finish reason, the usage), an error its OpenAI error object. Each is redacted
(``INFERD_REQUEST_LOG_REDACT``), then cut at ``INFERD_REQUEST_LOG_BODY_BYTES`` bytes with a
marker saying how much was left out.

Redaction: ``mask`` replaces emails (``[email]``), card numbers (13 to 19 digits, spaces or
dashes between, passing the Luhn check: ``[card]``), bearer tokens (``Bearer [token]``) and API
keys (``sk-``/``pk-``/``rk-`` then 16 or more key characters, AWS access key ids: ``[key]``);
``hash`` keeps only ``sha256:<hex>`` of the whole body; ``drop`` keeps nothing; ``none`` keeps
the body as it is.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from inferd.jsontypes import JsonObject, JsonValue

Redact = Literal["none", "mask", "hash", "drop"]

TRUNCATED = "…[truncated {} bytes]"
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_BEARER = re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{8,}")
_KEY = re.compile(r"\b(?:(?:sk|pk|rk)-[A-Za-z0-9_-]{16,}|AKIA[0-9A-Z]{16})\b")
# not a run of a longer number, nor a decimal fraction (an embedding's digits)
_CARD = re.compile(r"(?<![\w.])\d(?:[ -]?\d){12,18}(?![\w.])")


def luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card(match: re.Match[str]) -> str:
    digits = re.sub(r"[ -]", "", match.group())
    return "[card]" if luhn(digits) else match.group()


def mask(text: str) -> str:
    """``text`` with emails, card numbers, bearer tokens and API keys replaced."""
    text = _BEARER.sub("Bearer [token]", text)
    text = _KEY.sub("[key]", text)
    text = _EMAIL.sub("[email]", text)
    return _CARD.sub(_card, text)


def cap(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` bytes of UTF-8 (never inside a character), with a marker."""
    if len(text) * 4 <= limit:  # no need to encode: it fits whatever its characters
        return text
    data = text.encode()
    if len(data) <= limit:
        return text
    kept = data[:limit].decode(errors="ignore")
    return kept + TRUNCATED.format(len(data) - len(kept.encode()))


def body_text(body: Any, redact: Redact, limit: int) -> str | None:
    """A body as the request log keeps it (None: none, or ``drop``)."""
    if body is None or redact == "drop":
        return None
    if isinstance(body, str):
        text = body
    elif hasattr(body, "model_dump"):  # a parsed request: the fields the client set
        text = orjson.dumps(body.model_dump(mode="json", exclude_unset=True)).decode()
    else:
        text = orjson.dumps(body, default=str).decode()
    if redact == "hash":
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()
    if redact == "mask":
        text = mask(text)
    return cap(text, limit)


@dataclass
class _Tool:
    """A tool call of a streamed choice, its name and arguments gathered from its deltas."""

    id: JsonValue = None
    name: str = ""
    arguments: str = ""


@dataclass
class _Choice:
    """A streamed choice gathered from its chunks."""

    text: list[str] = field(default_factory=list)
    tools: dict[int, _Tool] = field(default_factory=dict)
    role: JsonValue = None
    finish_reason: JsonValue = None


def _object(value: JsonValue) -> JsonObject:
    return value if isinstance(value, dict) else {}


def _items(value: JsonValue) -> list[JsonValue]:
    return value if isinstance(value, list) else []


def _index(value: JsonValue) -> int:
    return value if isinstance(value, int) else 0


def assemble(chunks: Sequence[JsonObject]) -> JsonObject:
    """The answer a stream of chat or completion chunks amounts to."""
    choices: dict[int, _Choice] = {}
    head: JsonObject = {}
    usage: JsonValue = None
    chat = False
    for chunk in chunks:
        if not head:
            head = {k: chunk[k] for k in ("id", "created", "model") if k in chunk}
        if chunk.get("object") == "chat.completion.chunk":
            chat = True
        if chunk.get("usage"):
            usage = chunk["usage"]
        for item in _items(chunk.get("choices")):
            part = _object(item)
            index = _index(part.get("index"))
            choice = choices.setdefault(index, _Choice())
            if part.get("finish_reason"):
                choice.finish_reason = part["finish_reason"]
            text = part.get("text")
            if text and isinstance(text, str):
                choice.text.append(text)
            delta = _object(part.get("delta"))
            if delta:
                chat = True
            if delta.get("role"):
                choice.role = delta["role"]
            content = delta.get("content")
            if content and isinstance(content, str):
                choice.text.append(content)
            for entry in _items(delta.get("tool_calls")):
                call = _object(entry)
                slot = choice.tools.setdefault(_index(call.get("index")), _Tool())
                if call.get("id"):
                    slot.id = call["id"]
                function = _object(call.get("function"))
                slot.name += str(function.get("name") or "")
                slot.arguments += str(function.get("arguments") or "")
    out: list[JsonValue] = []
    for index in sorted(choices):
        c = choices[index]
        text = "".join(c.text)
        if chat:
            message: JsonObject = {"role": c.role or "assistant", "content": text}
            if c.tools:
                message["tool_calls"] = [
                    {"id": tool.id, "type": "function",
                     "function": {"name": tool.name, "arguments": tool.arguments}}
                    for tool in (c.tools[i] for i in sorted(c.tools))]
            out.append({"index": index, "message": message, "finish_reason": c.finish_reason})
        else:
            out.append({"index": index, "text": text, "finish_reason": c.finish_reason})
    return {**head, "object": "chat.completion" if chat else "text_completion",
            "choices": out, "usage": usage}
