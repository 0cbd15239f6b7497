"""JSON bodies that inferd stores or that change its configuration: one set of rules, checked
once where the body arrives, the same whatever database is behind.

orjson parses strict JSON: no ``NaN`` or ``Infinity``, no number beyond a double, valid UTF-8,
no lone surrogate (what PostgreSQL's JSON and text columns refuse while SQLite takes them).
One walk then refuses what would fail later or differ between stores:

- nesting deeper than ``MAX_DEPTH`` (storing and hashing a body serialises it again, and a
  serialiser has a recursion limit of its own);
- a NUL character in any string or key (PostgreSQL's text columns cannot hold one);
- with ``unique_keys``, a key given twice in one object (which one wins differs between
  parsers; ``{"scope": "user", "scope": "admin"}`` must not create an admin key).

Each refusal is ``InvalidRequest`` (400 ``invalid_request_error``) naming the place as
``param`` (``body.messages[3].content``). Inference bodies that are answered, not stored, are
parsed by their pydantic models straight from the bytes instead (the hot path).
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson

from inferd.errors import InvalidRequest
from inferd.jsontypes import JsonObject, JsonValue

MAX_DEPTH = 64
_NOT_JSON = ("We could not parse the JSON body of your request. (HINT: This likely means you "
             "aren't using your HTTP library correctly.)")

Path = tuple[str | int, ...]


def parse_json(raw: bytes | str, *, unique_keys: bool = False) -> Any:
    """The JSON value of ``raw``; raises ``InvalidRequest`` for anything the rules refuse."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise _explain(raw) from None
    text = raw if isinstance(raw, bytes) else raw.encode()
    has_nul = b"\\u0000" in text
    if has_nul or text.count(b"[") + text.count(b"{") > MAX_DEPTH:  # else nothing to find
        check_value(value, has_nul=has_nul)
    if unique_keys and isinstance(value, dict | list):
        json.loads(raw, object_pairs_hook=_unique)  # the depth is known to be small now
    return value


def check_value(value: Any, *, has_nul: bool = True) -> None:
    """Refuse a parsed value that nests too deeply, holds a NUL or a non-finite number.

    ``has_nul=False`` skips looking into strings (the raw text had no ``\\u0000``).
    """
    stack: list[tuple[Any, Path]] = [(value, ())]
    while stack:
        item, path = stack.pop()
        if isinstance(item, dict):
            children: Any = item.items()
        elif isinstance(item, list):
            children = enumerate(item)
        else:
            _check_scalar(item, path, has_nul)
            continue
        if len(path) >= MAX_DEPTH:
            raise InvalidRequest(f"The JSON body nests deeper than {MAX_DEPTH} levels.",
                                 param=_param(path), code="invalid_json")
        for key, child in children:
            if has_nul and isinstance(key, str) and "\x00" in key:
                raise _nul(path)
            stack.append((child, (*path, key)))


def _check_scalar(item: Any, path: Path, has_nul: bool) -> None:
    if has_nul and isinstance(item, str) and "\x00" in item:
        raise _nul(path)
    if isinstance(item, float) and not math.isfinite(item):
        raise InvalidRequest("Numbers must be finite: NaN, Infinity and numbers beyond a "
                             "double are refused.", param=_param(path), code="invalid_value")


def _nul(path: Path) -> InvalidRequest:
    return InvalidRequest("Strings may not contain the NUL character (\\u0000).",
                          param=_param(path), code="invalid_value")


def _param(path: Path) -> str | None:
    """``("messages", 3, "content")`` -> ``"messages[3].content"``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or None


def _unique(pairs: list[tuple[str, JsonValue]]) -> JsonObject:
    value = dict(pairs)
    if len(value) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise InvalidRequest(f"The key '{key}' appears more than once in one object "
                                     "of the JSON body.", param=key, code="duplicate_key")
            seen.add(key)
    return value


def _explain(raw: bytes | str) -> InvalidRequest:
    """Why orjson refused ``raw``: a place when Python's lenient parser finds one."""
    try:
        value = json.loads(raw)  # takes NaN, Infinity and huge numbers
    except RecursionError:
        return InvalidRequest(f"The JSON body nests deeper than {MAX_DEPTH} levels.",
                              code="invalid_json")
    except ValueError:
        return InvalidRequest(_NOT_JSON, code="invalid_json")
    try:
        check_value(value)
    except InvalidRequest as problem:
        return problem
    return InvalidRequest(_NOT_JSON, code="invalid_json")
