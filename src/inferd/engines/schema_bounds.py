"""Bounds on what a JSON schema may ask of the in-process grammar engine.

A schema (``response_format``, a function's ``parameters``) becomes a GBNF grammar: the
converter spells a repetition of up to N items as N nested optional groups, and llama.cpp's
grammar parser recurses once per group. Past about 20,000 levels on an 8 MiB stack (2,000 on
1 MiB) the process dies of a stack overflow, taking every request in flight with it; a large
``minItems`` or ``{n}`` first costs the converter memory in proportion. So before anything is
converted, ``check_schema`` refuses a schema asking for more than these bounds, and
``check_grammar`` checks the grammar text itself (its size, its nesting, its own ``{m,n}``)
before it reaches native code. A refusal is a 400 naming the field and the bound.

The bounds are far above what real schemas use: a repetition of 1,000 nests 1,000 levels,
which the parser takes on a 1 MiB thread stack with room to spare.
"""

from __future__ import annotations

import json
import re
from typing import Any

from inferd.errors import InvalidRequest

# Largest count a schema may ask for: minItems/maxItems, minLength/maxLength, ..., and the
# {m}, {m,}, {m,n} quantifiers of a pattern.
MAX_REPEAT = 1000
# All the counts of one schema together (each one expands to that many grammar items).
MAX_TOTAL_REPEAT = 10_000
# Subschemas nested in one another.
MAX_DEPTH = 32
# Properties of one object; alternatives of anyOf/oneOf/allOf; values of an enum; items of
# a prefixItems tuple.
MAX_BRANCHES = 512
# Characters of a pattern.
MAX_PATTERN = 1000
# Size of the schema as JSON.
MAX_SCHEMA_BYTES = 256 * 1024
# Size of the grammar text, and how deep its groups may nest.
MAX_GRAMMAR_BYTES = 1024 * 1024
MAX_GRAMMAR_DEPTH = 1100

CODE = "schema_too_complex"

# Keywords counting items, characters or properties (``_build_repetition`` expands the first
# four; the others are checked the same way so no count escapes a bound).
COUNT_KEYWORDS = ("minItems", "maxItems", "minLength", "maxLength", "minProperties",
                  "maxProperties", "minContains", "maxContains")
# Keywords whose value is one subschema, a list of them, or a name -> subschema map.
_ONE = ("items", "additionalItems", "additionalProperties", "contains", "not", "if", "then",
        "else", "propertyNames", "unevaluatedItems", "unevaluatedProperties")
_LIST = ("anyOf", "oneOf", "allOf", "prefixItems", "items")
_MAP = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_QUANTIFIER = re.compile(r"\{([^}]*)\}")


def _refuse(where: str, message: str) -> InvalidRequest:
    return InvalidRequest(f"Invalid '{where}': {message}", param=where, code=CODE)


def check_schema(schema: Any, where: str) -> None:
    """Raise a 400 naming the place (``where`` + the path inside) of the first bound
    ``schema`` exceeds; the schema is not changed."""
    try:
        size = len(json.dumps(schema))
    except (TypeError, ValueError, RecursionError) as exc:
        raise _refuse(where, "the schema is not a JSON document.") from exc
    if size > MAX_SCHEMA_BYTES:
        raise _refuse(where, f"the schema is {size} bytes of JSON; at most "
                             f"{MAX_SCHEMA_BYTES} are accepted.")
    total = 0
    # (subschema, its path, its depth): walked without recursion.
    todo: list[tuple[Any, str, int]] = [(schema, where, 1)]
    while todo:
        node, path, depth = todo.pop()
        if not isinstance(node, dict):
            continue  # true/false, or what the converter itself refuses
        if depth > MAX_DEPTH:
            raise _refuse(path, f"subschemas nest more than {MAX_DEPTH} levels deep.")
        for key in COUNT_KEYWORDS:
            if key in node:
                total += _count(node[key], f"{path}.{key}")
        pattern = node.get("pattern")
        if pattern is not None:
            total += _pattern(pattern, f"{path}.pattern")
        if total > MAX_TOTAL_REPEAT:
            raise _refuse(path, f"the schema's counts (minItems, maxLength, pattern "
                                f"quantifiers, ...) add up to more than {MAX_TOTAL_REPEAT}.")
        for key in ("enum", *_LIST, *_MAP):
            value = node.get(key)
            if isinstance(value, list | dict) and len(value) > MAX_BRANCHES:
                raise _refuse(f"{path}.{key}", f"{len(value)} entries; at most "
                                               f"{MAX_BRANCHES} are accepted.")
        for key in _ONE:
            if isinstance(node.get(key), dict):
                todo.append((node[key], f"{path}.{key}", depth + 1))
        for key in _LIST:
            if isinstance(node.get(key), list):
                todo.extend((sub, f"{path}.{key}[{i}]", depth + 1)
                            for i, sub in enumerate(node[key]))
        for key in _MAP:
            if isinstance(node.get(key), dict):
                todo.extend((sub, f"{path}.{key}.{name}", depth + 1)
                            for name, sub in node[key].items())


def _count(value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _refuse(path, "must be a non-negative integer.")
    if value > MAX_REPEAT:
        raise _refuse(path, f"{value} is more than this server accepts (at most {MAX_REPEAT}).")
    return value


def _pattern(pattern: Any, path: str) -> int:
    """The counts a pattern's quantifiers ask for; a refusal past the bounds.

    Every ``{...}`` is read as the converter reads a quantifier (up to the next ``}``, the
    numbers around a comma), wherever it stands, so none is missed."""
    if not isinstance(pattern, str):
        raise _refuse(path, "must be a string.")
    if len(pattern) > MAX_PATTERN:
        raise _refuse(path, f"{len(pattern)} characters; at most {MAX_PATTERN} are accepted.")
    total = 0
    for match in _QUANTIFIER.finditer(pattern):
        for part in match.group(1).split(","):
            try:
                number = int(part.strip())
            except ValueError:
                continue  # not a count: the converter refuses or reads it as text
            if number > MAX_REPEAT:
                raise _refuse(path, f"the quantifier {{{match.group(1)}}} asks for {number} "
                                    f"repetitions; at most {MAX_REPEAT} are accepted.")
            total += max(number, 0)
    if (problem := _empty_repeat(pattern)) is not None:
        raise _refuse(path, problem)
    return total


def _empty_repeat(pattern: str) -> str | None:
    """Why the pattern repeats a part that can match nothing (or holds a bracket the
    converter cannot read), or None.

    Such a part (``(a?)*``, ``(b|){0,50}``) makes llama.cpp's grammar recurse without end
    (a crash) or try every way of splitting the text (a sampler stuck for minutes). Read as
    the converter reads a pattern: groups, alternatives, and atoms (a character, an escape,
    a class, a dot) each followed by at most one quantifier; without recursion."""
    if not (pattern.startswith("^") and pattern.endswith("$")):
        return None  # the converter refuses it
    body = pattern[1:-1]
    # Per open group: [some finished alternative may be empty, the current one may be
    # empty so far, whether its last atom may be empty (None: no atom yet)].
    frames: list[list[bool | None]] = [[False, True, None]]

    def atom(empty: bool) -> None:
        frame = frames[-1]
        if frame[2] is not None:
            frame[1] = bool(frame[1]) and bool(frame[2])
        frame[2] = empty

    def repeated(quantifier: str) -> str | None:
        frame = frames[-1]
        if frame[2]:
            return (f"'{quantifier}' repeats a part of the pattern that can match nothing; "
                    "make the part match at least one character.")
        return None

    i, n = 0, len(body)
    while i < n:
        c = body[i]
        if c == "\\":
            atom(False)
            i += 2
            continue
        if c == "[":
            i += 1
            while i < n and body[i] != "]":
                i += 2 if body[i] == "\\" else 1
            atom(False)
        elif c == "(":
            frames.append([False, True, None])
        elif c == ")":
            if len(frames) > 1:
                inner = frames.pop()
                if inner[2] is not None:
                    inner[1] = bool(inner[1]) and bool(inner[2])
                atom(bool(inner[0]) or bool(inner[1]))
        elif c == "|":
            frame = frames[-1]
            if frame[2] is not None:
                frame[1] = bool(frame[1]) and bool(frame[2])
            frame[0] = bool(frame[0]) or bool(frame[1])
            frame[1], frame[2] = True, None
        elif c in "*+":
            if (problem := repeated(c)) is not None:
                return problem
            if c == "*":
                frames[-1][2] = True if frames[-1][2] is not None else None
        elif c == "?":
            if frames[-1][2] is not None:
                frames[-1][2] = True
        elif c == "{":
            end = body.find("}", i)
            if end < 0:
                return None  # the converter refuses it
            quantifier = body[i:end + 1]
            numbers = [part.strip() for part in body[i + 1:end].split(",")]
            try:
                low = int(numbers[0]) if numbers[0] else 0
                high = (low if len(numbers) == 1
                        else int(numbers[1]) if len(numbers) == 2 and numbers[1] else None)
            except ValueError:
                return None  # the converter refuses it
            if (high is None or high > 1) and (problem := repeated(quantifier)) is not None:
                return problem
            if low == 0 and frames[-1][2] is not None:
                frames[-1][2] = True
            i = end
        elif c in "]}":  # the converter would loop on it for ever
            return f"'{c}' has no opening bracket; write it as '\\{c}'."
        else:
            atom(False)
        i += 1
    return None


def check_grammar(grammar: str, where: str) -> None:
    """Refuse a GBNF text too large, nesting its groups too deep, or repeating an item more
    than ``MAX_REPEAT`` times: what reaches llama.cpp's recursive parser."""
    if len(grammar) > MAX_GRAMMAR_BYTES:
        raise _refuse(where, f"the schema makes a grammar of {len(grammar)} characters; at "
                             f"most {MAX_GRAMMAR_BYTES} are accepted.")
    depth = deepest = 0
    i, n = 0, len(grammar)
    while i < n:
        c = grammar[i]
        if c == '"' or c == "[":  # a literal or a character class: skip to its end
            close = '"' if c == '"' else "]"
            i += 1
            while i < n and grammar[i] != close:
                i += 2 if grammar[i] == "\\" else 1
        elif c == "#":  # a comment, to the end of the line
            while i < n and grammar[i] not in "\r\n":
                i += 1
        elif c == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif c == ")":
            depth -= 1
        elif c == "{":
            end = grammar.find("}", i)
            for part in grammar[i + 1:end if end >= 0 else n].split(","):
                digits = part.strip()
                if digits.isdigit() and (len(digits) > 6 or int(digits) > MAX_REPEAT):
                    raise _refuse(where, f"the schema makes a grammar repeating an item "
                                         f"{digits} times; at most {MAX_REPEAT} are accepted.")
        i += 1
    if deepest > MAX_GRAMMAR_DEPTH:
        raise _refuse(where, f"the schema makes a grammar nesting {deepest} levels deep; at "
                             f"most {MAX_GRAMMAR_DEPTH} are accepted.")
