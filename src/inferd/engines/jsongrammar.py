"""GBNF grammars for JSON answers that keep JSON's rules.

llama-cpp-python's JSON-schema converter lets a string hold any character but ``"`` and ``\\``
(``char ::= [^"\\]``), so a model sampled at temperature 1 may write a raw line feed or tab
inside a string: the answer is then no JSON at all, and every strict parser (the SDKs'
included) refuses it. The grammars built here allow in strings only what JSON allows: no raw
U+0000..U+001F, escapes such as ``\\n`` instead. ``prefixed`` renames a grammar's rules so
that it can be an alternative inside another grammar (the text answer beside tool calls).
"""

from __future__ import annotations

import json
import re

from inferd.jsontypes import JsonObject

# The converter's string character, and what replaces it: the same escapes, no raw control
# characters. The regex "." of a ``pattern`` (``dot``) may not end the string either.
_CHAR = r'char ::= [^"\\] | '
# Nor what is no Unicode scalar value: llama.cpp's grammars read the bytes of a surrogate
# (ED A0..BF ..) or of a code point past U+10FFFF (F4 90.. ..) as one character, which the
# answer's text then holds as several U+FFFD (a maxLength passed, the JSON no longer valid).
_NOT_TEXT = r"\uD800-\uDFFF\U00110000-\U001FFFFF"
_JSON_CHAR = r'char ::= [^"\\\x00-\x1F' + _NOT_TEXT + r'] | '
_DOT = r"dot ::= [^\x0A\x0D]"
_JSON_DOT = r'dot ::= [^"\\\x00-\x1F' + _NOT_TEXT + r']'
# ``response_format: json_object``: any JSON object, one rule a line (so it can be
# ``prefixed``), whitespace as llama.cpp's JSON grammar allows it.
JSON_OBJECT = "\n".join([
    "root ::= object",
    'value ::= object | array | string | number | ("true" | "false" | "null") ws',
    'object ::= "{" ws ( string ":" ws value ("," ws string ":" ws value)* )? "}" ws',
    'array ::= "[" ws ( value ("," ws value)* )? "]" ws',
    r'string ::= "\"" ( [^"\\\x00-\x1F' + _NOT_TEXT
    + r'] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4}) )* "\"" ws',
    r'number ::= "-"? ("0" | [1-9] [0-9]{0,15}) ("." [0-9]+)? ([eE] [-+]? [0-9]+)? ws',
    r'ws ::= | " " | "\n" [ \t]{0,20}',
])
_RULE = re.compile(r"^([A-Za-z0-9-]+) ::= (.*)$")
_NAME = re.compile(r"[A-Za-z0-9-]+")


def json_strings(gbnf: str) -> str:
    """A converted grammar whose strings hold only JSON-legal characters."""
    out = []
    for line in gbnf.splitlines():
        if line.startswith(_CHAR):
            line = _JSON_CHAR + line[len(_CHAR):]
        elif line == _DOT:
            line = _JSON_DOT
        out.append(line)
    return "\n".join(out)


def schema_gbnf(schema: JsonObject, prop_order: list[str] | None = None) -> str:
    """The grammar of a JSON schema (root rule ``root``); raises what the converter raises
    for a schema it cannot take."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    converted: str = json_schema_to_gbnf(json.dumps(schema), prop_order=prop_order)
    return json_strings(converted)


def rules(gbnf: str) -> dict[str, str]:
    """A converted grammar's rules, name to body (the converter writes one rule a line)."""
    out: dict[str, str] = {}
    for line in gbnf.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _RULE.match(line)
        if match is None:
            raise ValueError(f"not a one-line GBNF rule: {line[:80]!r}")
        out[match.group(1)] = match.group(2)
    return out


def _renamed(body: str, names: dict[str, str]) -> str:
    """``body`` with its references renamed; literals, classes and counts kept as they are."""
    out: list[str] = []
    i = 0
    while i < len(body):
        c = body[i]
        if c in "\"[{":
            close = {'"': '"', "[": "]", "{": "}"}[c]
            j = i + 1
            while j < len(body) and body[j] != close:
                j += 2 if body[j] == "\\" else 1
            out.append(body[i:j + 1])
            i = j + 1
            continue
        match = _NAME.match(body, i)
        if match is not None:
            out.append(names.get(match.group(), match.group()))
            i = match.end()
            continue
        out.append(c)
        i += 1
    return "".join(out)


def prefixed(gbnf: str, prefix: str, taken: set[str]) -> tuple[str, str]:
    """``gbnf`` with every rule renamed to start with ``prefix`` (followed by a number when a
    name would clash with one of ``taken``); returns the grammar and its root rule's name."""
    own = rules(gbnf)
    for attempt in range(len(taken) + 1):
        start = prefix if attempt == 0 else f"{prefix}{attempt}-"
        names = {name: start + name for name in own}
        if not taken & set(names.values()):
            break
    text = "\n".join(f"{names[name]} ::= {_renamed(body, names)}" for name, body in own.items())
    return text, names["root"]
