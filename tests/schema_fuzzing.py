"""Generated JSON schemas through every endpoint that takes one, against ``inferd serve``.

The property test of the schema bounds (``tests/e2e/test_schema_property.py``) and its longer
run (``bench/schemas.py``) share this: hypothesis strategies for schemas (leaves drawn by
``hypothesis-jsonschema`` from a meta-schema of the subset the grammar converter reads, nested
by ``st.recursive``, with counts and pattern quantifiers up to adversarial sizes), a fixed list
of adversarial schemas, and ``check``, which sends one schema through one endpoint and says
what happened: answered, refused (by which bound), or a failure (the process gone, a 5xx, an
error not in the API's shape, no answer).
"""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema

MODEL = "smollm2-135m-instruct"
MESSAGES = [{"role": "user", "content": "Answer in JSON."}]
MAX_TOKENS = 4

# Counts: ordinary ones, the bounds' edges, and the sizes that crashed the process.
COUNT: dict[str, Any] = {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 12},
                                   {"type": "integer", "minimum": 0, "maximum": 60_000},
                                   {"enum": [999, 1000, 1001, 5000, 20_000, 30_000, 50_000]}]}


SCALARS: dict[str, Any] = {"type": ["string", "integer", "boolean", "null"]}


def _leaf(kind: str, **optional: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({"type": st.just(kind)}, optional=optional)


def leaf_schemas() -> st.SearchStrategy[dict[str, Any]]:
    """JSON schemas of one value (no nesting), as the converter reads them; the values in
    them drawn by hypothesis-jsonschema from schemas of those values."""
    return st.one_of(
        _leaf("string", minLength=counts(), maxLength=counts()),
        _leaf("string", format=st.sampled_from(["date", "time", "date-time", "uuid", "email"])),
        _leaf("integer", minimum=from_schema({"type": "integer"}),
              maximum=from_schema({"type": "integer"})),
        _leaf("number"), _leaf("boolean"), _leaf("null"),
        st.fixed_dictionaries({"enum": from_schema({"type": "array", "items": SCALARS,
                                                    "minItems": 1, "maxItems": 6})}),
        st.fixed_dictionaries({"const": from_schema(SCALARS)}),
        st.fixed_dictionaries({"type": st.lists(st.sampled_from(
            ["string", "integer", "boolean", "null"]), min_size=1, max_size=3, unique=True)}),
        st.just({}))


KEYWORD_NAMES = ["maxItems", "pattern", "properties", "enum", "items", "type", "anyOf"]


def counts() -> st.SearchStrategy[int]:
    return from_schema(COUNT)  # type: ignore[no-any-return]


def quantifiers() -> st.SearchStrategy[str]:
    def braces(low: int, high: int | None, kind: int) -> str:
        return (f"{{{low}}}" if kind == 0 else f"{{{low},}}" if kind == 1 or high is None
                else f"{{{min(low, high)},{max(low, high)}}}")

    return st.one_of(st.sampled_from(["", "", "?", "*", "+"]),
                     st.builds(braces, counts(), st.none() | counts(), st.integers(0, 2)))


def regexes() -> st.SearchStrategy[str]:
    """Regular expressions of the converter's syntax: atoms, groups, alternatives, and
    quantifiers of every size."""
    atoms = st.sampled_from(["a", "b", "xy", "[a-z]", "[0-9]", r"\d", r"\w", ".", r"\.", "-",
                             "[^\"]", "[)]"])

    def group(parts: list[str], alternative: bool) -> str:
        return "(" + ("|" if alternative else "").join(parts) + ")"

    unit = st.recursive(atoms, lambda inner: st.builds(
        group, st.lists(st.builds(str.__add__, inner, quantifiers()), min_size=0, max_size=3),
        st.booleans()), max_leaves=6)
    body = st.lists(st.builds(str.__add__, unit, quantifiers()), min_size=1, max_size=4)
    return st.builds(lambda parts: "^" + "".join(parts) + "$", body)


def leaves() -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(leaf_schemas(),
                     st.builds(lambda p: {"type": "string", "pattern": p}, regexes()),
                     # any regex hypothesis-jsonschema makes, anchored as the converter wants
                     st.builds(lambda p: {"type": "string", "pattern": f"^{p}$"},
                               from_schema({"type": "string", "format": "regex"})))


def schemas() -> st.SearchStrategy[dict[str, Any]]:
    names = st.one_of(st.sampled_from(KEYWORD_NAMES),
                      st.text("abcxyz_-. ", min_size=1, max_size=8))

    def obj(properties: dict[str, Any], required: list[str], extra: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "object", "properties": properties,
                               "required": [r for r in required if r in properties]}
        if extra is not None:
            out["additionalProperties"] = extra
        return out

    def array(items: Any, low: int | None, high: int | None) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "array", "items": items}
        if low is not None:
            out["minItems"] = low
        if high is not None:
            out["maxItems"] = high
        return out

    def extend(inner: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
        return st.one_of(
            st.builds(obj, st.dictionaries(names, inner, max_size=5), st.lists(names),
                      st.none() | st.booleans() | inner),
            st.builds(array, inner, st.none() | counts(), st.none() | counts()),
            st.builds(lambda alts: {"anyOf": alts}, st.lists(inner, min_size=1, max_size=4)),
            st.builds(lambda tup: {"type": "array", "items": tup},
                      st.lists(inner, min_size=1, max_size=3)))

    return st.recursive(leaves(), extend, max_leaves=10)


def _nested(depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "integer"}
    for _ in range(depth):
        schema = {"type": "array", "items": schema}
    return schema


# Shapes an attacker would pick; each goes through every endpoint.
ADVERSARIAL: list[dict[str, Any]] = [
    {"type": "array", "items": {"type": "integer"}, "maxItems": 50_000},
    {"type": "array", "items": {"type": "integer"}, "minItems": 1_000_000_000},
    {"type": "string", "maxLength": 40_000},
    {"type": "string", "minLength": 1_000_000_000},
    {"type": "string", "pattern": "^a{0,30000}$"},
    {"type": "string", "pattern": "^a{1000000000}$"},
    {"type": "string", "pattern": "^(a?)*$"},
    {"type": "string", "pattern": "^(a?){0,1000}$"},
    {"type": "string", "pattern": "^" + "(" * 2000 + "a" + ")" * 2000 + "$"},
    {"type": "string", "pattern": "^" + "(" * 450 + "a" + ")" * 450 + "$"},
    {"type": "string", "pattern": "^" + "(a" * 240 + ")?" * 240 + "$"},
    {"type": "object", "properties": {f"p{i}": {"type": "string", "maxLength": 1000}
                                      for i in range(40)}},
    {"type": "object", "properties": {f"p{i}": {"type": "integer"} for i in range(600)}},
    {"type": "object", "properties": {f"p{i}": {"type": "integer"} for i in range(500)}},
    {"enum": list(range(600))},
    {"anyOf": [{"const": i} for i in range(600)]},
    _nested(40), _nested(30),
    {"$defs": {"n": {"type": "object", "properties": {"next": {"$ref": "#/$defs/n"}}}},
     "$ref": "#/$defs/n"},
    {"$ref": "#/$defs/missing"},
    {"type": "array", "items": {"type": "array", "items": {"type": "string", "maxLength": 1000},
                                "maxItems": 1000}, "maxItems": 1000},
    {"type": "string", "pattern": "no anchors"},
    {"type": "string", "pattern": "^a]b}$"},
    {"type": "object", "description": "x" * 300_000},
]

# Schemas within the bounds whose grammar, at some point, allows no token of the bundled
# model's vocabulary: a character no token spells (a generated schema found the first). Each
# goes through every endpoint; the answer is a 4xx (or a 200 where the model may answer
# without the schema, as beside tools), never a dead process.
UNWRITABLE: list[dict[str, Any]] = [
    {"type": "string", "pattern": "^\U00062877$"},
    {"anyOf": [
        {"type": "string", "pattern": "^5\U00062877\u00d2\u00af[QpUWHe]\U000956e2\u00b1"
                                      "\U00092c19[^1lOf]_?..$"},
        {"type": "array", "items": [{"type": "string"}, {"type": ["integer"]},
                                    {"type": "number"}]}]},
    {"type": "object", "properties": {"a": {"type": "string", "pattern": "^x\U00062877$"}},
     "required": ["a"]},
]

# -- endpoints ------------------------------------------------------------------------------

def chat_format(schema: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": MESSAGES, "max_tokens": MAX_TOKENS,
            "response_format": {"type": "json_schema",
                                "json_schema": {"name": "out", "schema": schema}}}


def chat_tool(schema: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": MESSAGES, "max_tokens": MAX_TOKENS,
            "tool_choice": "required",
            "tools": [{"type": "function", "function": {"name": "f", "parameters": schema}}]}


def responses_format(schema: Any) -> dict[str, Any]:
    return {"model": MODEL, "input": "Answer in JSON.", "max_output_tokens": MAX_TOKENS,
            "text": {"format": {"type": "json_schema", "name": "out", "schema": schema}}}


def responses_tool(schema: Any) -> dict[str, Any]:
    return {"model": MODEL, "input": "Call f.", "max_output_tokens": MAX_TOKENS,
            "tool_choice": "required",
            "tools": [{"type": "function", "name": "f", "parameters": schema}]}


def anthropic_format(schema: Any) -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": MAX_TOKENS, "messages": MESSAGES,
            "output_config": {"format": {"type": "json_schema", "schema": schema}}}


def anthropic_tool(schema: Any) -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": MAX_TOKENS, "messages": MESSAGES,
            "tool_choice": {"type": "any"}, "tools": [{"name": "f", "input_schema": schema}]}


# name -> (path, body builder, error shape)
ENDPOINTS: dict[str, tuple[str, Callable[[Any], dict[str, Any]], str]] = {
    "chat response_format": ("/v1/chat/completions", chat_format, "openai"),
    "chat tools": ("/v1/chat/completions", chat_tool, "openai"),
    "responses text.format": ("/v1/responses", responses_format, "openai"),
    "responses tools": ("/v1/responses", responses_tool, "openai"),
    "messages output_config": ("/v1/messages", anthropic_format, "anthropic"),
    "messages tools": ("/v1/messages", anthropic_tool, "anthropic"),
}

# How a refusal's message names the bound it exceeded.
_BOUNDS = [("can match nothing", "pattern repeats an empty part"),
           ("no opening bracket", "pattern stray bracket"),
           ("quantifier", "pattern quantifier"), ("add up", "total of counts"),
           ("nest more than", "schema nesting"), ("entries", "branches"),
           ("bytes of JSON", "schema size"), ("characters; at most", "pattern length"),
           ("grammar nesting", "grammar nesting"), ("grammar of", "grammar size"),
           ("grammar repeating", "grammar repetition"),
           ("non-negative integer", "count not an integer")]


def refused_by(message: str, param: str | None) -> str:
    for needle, name in _BOUNDS:
        if needle in message:
            return name
    if param is None and message.startswith("Invalid '"):  # Anthropic's shape has no param
        param = message[len("Invalid '"):].split("'", 1)[0]
    last = (param or "").rsplit(".", 1)[-1]
    return last if last else "?"


@dataclass
class Tally:
    tried: int = 0
    answered: int = 0
    refused: Counter[str] = field(default_factory=Counter)  # by bound
    other_4xx: Counter[str] = field(default_factory=Counter)  # by code (unsupported schema)
    failures: list[str] = field(default_factory=list)  # crash, 5xx, bad shape, no answer
    crashes: int = 0
    seconds: float = 0.0
    previous: str = ""  # the last request sent
    slowest: list[tuple[float, str]] = field(default_factory=list)  # the 5 slowest requests

    def timed(self, seconds: float, what: str) -> None:
        self.seconds += seconds
        self.slowest = sorted([*self.slowest, (seconds, what)], reverse=True)[:5]

    def summary(self) -> str:
        lines = [f"schemas tried: {self.tried}", f"answered 200: {self.answered}",
                 f"refused by a bound: {sum(self.refused.values())}"]
        lines += [f"  {name}: {n}" for name, n in self.refused.most_common()]
        lines.append(f"other 4xx (schema not supported): {sum(self.other_4xx.values())}")
        lines += [f"  {name}: {n}" for name, n in self.other_4xx.most_common()]
        lines += [f"crashes: {self.crashes}", f"failures: {len(self.failures)}",
                  f"request time: {self.seconds:.1f} s in all, slowest:"]
        lines += [f"  {seconds:.2f} s {what}" for seconds, what in self.slowest]
        return "\n".join(lines)


def check(client: httpx.Client, proc: subprocess.Popen[bytes], endpoint: str, schema: Any,
          tally: Tally) -> str | None:
    """Send ``schema`` through ``endpoint``; count the outcome; a failure's description."""
    path, body, shape = ENDPOINTS[endpoint]
    if tally.crashes:  # nothing more to learn from a dead process: the first cause stands
        return tally.failures[0]
    tally.tried += 1
    problem: str | None = None
    started = time.perf_counter()
    try:
        response = client.post(path, json=body(schema))
    except httpx.HTTPError as exc:
        problem = f"no answer ({type(exc).__name__})"
    else:
        problem = _judge(response, shape, tally)
    tally.timed(time.perf_counter() - started, f"{endpoint}: {str(schema)[:120]}")
    if proc.poll() is not None:
        tally.crashes += 1
        problem = (f"the process exited with {proc.returncode} (the request before: "
                   f"{tally.previous})")
    if problem is not None:
        problem = f"{endpoint}: {problem}; schema {str(schema)[:300]}"
        tally.failures.append(problem)
    tally.previous = f"{endpoint}: {str(schema)[:300]}"
    return problem


def _judge(response: httpx.Response, shape: str, tally: Tally) -> str | None:
    if response.status_code == 200:
        tally.answered += 1
        return None
    if not 400 <= response.status_code < 500:
        return f"status {response.status_code}: {response.text[:300]}"
    try:
        data = response.json()
    except ValueError:
        return f"status {response.status_code} without JSON: {response.text[:300]}"
    if shape == "anthropic":
        error = data.get("error") if data.get("type") == "error" else None
        if not isinstance(error, dict) or set(error) != {"type", "message"}:
            return f"not Anthropic's error shape: {response.text[:300]}"
        message, param, code = str(error["message"]), None, error["type"]
    else:
        error = data.get("error")
        if not isinstance(error, dict) or set(error) != {"message", "type", "param", "code"}:
            return f"not the OpenAI error shape: {response.text[:300]}"
        message, param, code = str(error["message"]), error["param"], error["code"]
    if "at most" in message or "can match nothing" in message \
            or code == "schema_too_complex":
        tally.refused[refused_by(message, param)] += 1
    else:
        tally.other_4xx[str(code)] += 1
    return None


def run(client: httpx.Client, proc: subprocess.Popen[bytes], examples: int,
        seed_value: int | None = None, fail_fast: bool = True,
        endpoints_each: int = len(ENDPOINTS)) -> Tally:
    """The adversarial list, each schema through ``endpoints_each`` endpoints (in turn: all
    of them are used), then ``examples`` generated schemas, each through an endpoint
    hypothesis picks. ``fail_fast`` fails (and shrinks) on the first failure; otherwise every
    outcome is counted."""
    tally = Tally()
    names = list(ENDPOINTS)
    for index, schema in enumerate(ADVERSARIAL):
        for turn in range(endpoints_each):
            endpoint = names[(index + turn * 3) % len(names)]
            problem = check(client, proc, endpoint, schema, tally)
            assert problem is None or not fail_fast, problem

    for schema in UNWRITABLE:
        for endpoint in names:
            problem = check(client, proc, endpoint, schema, tally)
            assert problem is None or not fail_fast, problem

    @settings(max_examples=examples, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck), print_blob=True)
    @given(schema=schemas(), endpoint=st.sampled_from(sorted(ENDPOINTS)))
    def generated(schema: dict[str, Any], endpoint: str) -> None:
        problem = check(client, proc, endpoint, schema, tally)
        assert problem is None or not fail_fast, problem

    if seed_value is not None:
        generated = seed(seed_value)(generated)
    generated()
    return tally
