"""Constrained output keeps its promise on the bundled model at temperature 1, over many seeds,
with the official SDKs' strict paths as clients.

Every property asserted holds for every answer the grammar allows, whatever the model picks:
strings are bounded by ``maxLength`` so every answer ends before ``max_tokens``, and then a
JSON answer parses and validates, and a forced call is a call. Several choices (``n``) of one
request are different samples (choice ``i`` uses ``seed + i``).
"""

from __future__ import annotations

import json
from typing import Any

import anthropic
import jsonschema
import openai
import pytest
from openai import OpenAI
from pydantic import BaseModel, Field

from tests.helpers import InferdProcess

CHAT_MODEL = "smollm2-135m-instruct"
SEEDS = (0, 100, 200)  # with n=8: 24 samples per test
LIST_ASK = [{"role": "user", "content": "Write a shopping list, one item per line, and save "
                                        "it as a note."}]
LIST_SCHEMA = {"type": "object", "properties": {"items": {"type": "string", "maxLength": 60}},
               "required": ["items"], "additionalProperties": False}


class Note(BaseModel):
    title: str = Field(max_length=20)
    body: str = Field(max_length=60)


NOTE_TOOL = openai.pydantic_function_tool(Note, name="save_note",
                                          description="Save a note of several lines")
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The current weather of a city", "strict": True,
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 30}},
                   "required": ["city"], "additionalProperties": False}}}
NAMED = {"type": "function", "function": {"name": "save_note"}}


@pytest.fixture(scope="module")
def claude(inferd_server: InferdProcess) -> Any:
    with anthropic.Anthropic(base_url=inferd_server.url, api_key="unused", max_retries=0,
                             timeout=300) as c:
        yield c


def _valid(text: str, schema: dict[str, Any]) -> None:
    jsonschema.validate(json.loads(text), schema)  # json.loads: strict, as the SDKs parse


# -- json_schema ------------------------------------------------------------------------------

def test_json_schema_answers_parse_and_validate(client: OpenAI) -> None:
    for seed in SEEDS:
        answer = client.chat.completions.create(
            model=CHAT_MODEL, messages=LIST_ASK, temperature=1, seed=seed, n=8,  # type: ignore[arg-type]
            max_tokens=400, response_format={"type": "json_schema", "json_schema": {
                "name": "shopping", "schema": LIST_SCHEMA, "strict": True}})
        for choice in answer.choices:
            assert choice.finish_reason == "stop", choice
            _valid(choice.message.content or "", LIST_SCHEMA)


def test_streamed_json_schema_answers_parse_and_validate(client: OpenAI) -> None:
    class Shopping(BaseModel):
        items: str = Field(max_length=60)

    for seed in SEEDS:
        with client.chat.completions.stream(
                model=CHAT_MODEL, messages=LIST_ASK, temperature=1, seed=seed, n=8,  # type: ignore[arg-type]
                max_tokens=400, response_format=Shopping) as stream:
            final = stream.get_final_completion()  # the SDK parses each choice strictly
        for choice in final.choices:
            assert choice.finish_reason == "stop", choice
            assert isinstance(choice.message.parsed, Shopping)


# -- forced calls ---------------------------------------------------------------------------

def _is_call(choice: Any, names: set[str]) -> None:
    """A whole forced call: in tool_calls, finish_reason tool_calls, no text."""
    assert choice.finish_reason == "tool_calls", choice
    assert not choice.message.content, choice
    calls = choice.message.tool_calls or []
    assert len(calls) == 1, choice
    assert calls[0].function.name in names
    arguments = json.loads(calls[0].function.arguments)
    if calls[0].function.name == "save_note":
        assert isinstance(calls[0].function.parsed_arguments, Note)
    else:
        jsonschema.validate(arguments, WEATHER["function"]["parameters"])  # type: ignore[index]


@pytest.mark.parametrize("tool_choice", ["required", NAMED])
def test_forced_calls_are_calls(client: OpenAI, tool_choice: Any) -> None:
    names = {"save_note"} if tool_choice == NAMED else {"save_note", "get_weather"}
    for seed in SEEDS:
        answer = client.chat.completions.parse(
            model=CHAT_MODEL, messages=LIST_ASK, tools=[NOTE_TOOL, WEATHER],  # type: ignore[list-item]
            tool_choice=tool_choice, parallel_tool_calls=False, temperature=1, seed=seed, n=8,
            max_tokens=400)
        for choice in answer.choices:
            _is_call(choice, names)


@pytest.mark.parametrize("tool_choice", ["required", NAMED])
def test_streamed_forced_calls_are_calls(client: OpenAI, tool_choice: Any) -> None:
    names = {"save_note"} if tool_choice == NAMED else {"save_note", "get_weather"}
    for seed in SEEDS:
        # the SDK's stream helper parses each strict tool's arguments as they come
        with client.chat.completions.stream(
                model=CHAT_MODEL, messages=LIST_ASK, tools=[NOTE_TOOL, WEATHER],  # type: ignore[list-item]
                tool_choice=tool_choice, parallel_tool_calls=False, temperature=1, seed=seed,
                n=8, max_tokens=400) as stream:
            final = stream.get_final_completion()
        for choice in final.choices:
            _is_call(choice, names)


def test_a_stop_string_does_not_cut_a_forced_call(client: OpenAI) -> None:
    answer = client.chat.completions.parse(
        model=CHAT_MODEL, messages=LIST_ASK, tools=[NOTE_TOOL], tool_choice=NAMED,  # type: ignore[list-item]
        parallel_tool_calls=False, temperature=1, seed=7, n=4, max_tokens=400,
        stop=["\n", "}"])
    for choice in answer.choices:
        _is_call(choice, {"save_note"})


@pytest.mark.parametrize("max_tokens", [1, 2, 4, 8, 12, 16])
def test_a_forced_call_cut_by_max_tokens_is_a_partial_call(client: OpenAI,
                                                           max_tokens: int) -> None:
    kwargs: dict[str, Any] = {"model": CHAT_MODEL, "messages": LIST_ASK, "tools": [NOTE_TOOL],
                              "tool_choice": NAMED, "temperature": 1, "seed": max_tokens,
                              "max_tokens": max_tokens}
    whole = client.chat.completions.create(**kwargs).choices[0]
    assert whole.finish_reason == "length"
    assert whole.message.content is None
    assert [c.function.name for c in whole.message.tool_calls or []] == ["save_note"]  # type: ignore[union-attr]
    content, calls, finish = "", {}, None
    for chunk in client.chat.completions.create(stream=True, **kwargs):
        for choice in chunk.choices:
            content += choice.delta.content or ""
            for call in choice.delta.tool_calls or []:
                slot = calls.setdefault(call.index, {"name": "", "arguments": ""})
                slot["name"] += (call.function and call.function.name) or ""
                slot["arguments"] += (call.function and call.function.arguments) or ""
            finish = choice.finish_reason or finish
    assert finish == "length"
    assert content == ""
    assert [c["name"] for c in calls.values()] == ["save_note"]
    # the same seed: the same partial arguments, whole or streamed
    assert calls[0]["arguments"] == whole.message.tool_calls[0].function.arguments  # type: ignore[index,union-attr]


@pytest.mark.parametrize("choice", [
    {"type": "any", "disable_parallel_tool_use": True},
    {"type": "tool", "name": "save_note", "disable_parallel_tool_use": True}])
@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_forced_tool_use(claude: anthropic.Anthropic, choice: dict[str, Any],
                                   stream: bool) -> None:
    tools: Any = [{"name": "save_note", "description": "Save a note of several lines",
                   "input_schema": Note.model_json_schema()},
                  {"name": "get_weather", "description": "The current weather of a city",
                   "input_schema": WEATHER["function"]["parameters"]}]  # type: ignore[index]
    for _ in range(6):  # the Messages API has no seed: each request samples anew
        kwargs: Any = {"model": CHAT_MODEL, "max_tokens": 400, "messages": LIST_ASK,
                       "tools": tools, "tool_choice": choice, "extra_body": {"temperature": 1}}
        if stream:
            with claude.messages.stream(**kwargs) as events:
                message = events.get_final_message()  # the SDK parses the streamed input
        else:
            message = claude.messages.create(**kwargs)
        assert message.stop_reason == "tool_use", message
        assert [b.type for b in message.content] == ["tool_use"], message
        block = message.content[0]
        assert block.type == "tool_use"
        if block.name == "save_note":
            Note.model_validate(block.input)
        else:
            assert choice["type"] == "any"
            jsonschema.validate(block.input, tools[1]["input_schema"])


# -- response_format with tools -------------------------------------------------------------

def test_response_format_with_a_forced_tool_answers_the_call(client: OpenAI) -> None:
    class Shopping(BaseModel):
        items: str

    answer = client.chat.completions.parse(
        model=CHAT_MODEL, messages=LIST_ASK, tools=[NOTE_TOOL], tool_choice=NAMED,  # type: ignore[list-item]
        response_format=Shopping, parallel_tool_calls=False, temperature=1, seed=3, n=4,
        max_tokens=400)
    for choice in answer.choices:
        _is_call(choice, {"save_note"})


def test_response_format_with_auto_tools_is_a_call_or_the_format(client: OpenAI) -> None:
    answer = client.chat.completions.create(
        model=CHAT_MODEL, messages=LIST_ASK, tools=[NOTE_TOOL], tool_choice="auto",  # type: ignore[list-item]
        parallel_tool_calls=False, temperature=1, seed=5, n=8, max_tokens=400,
        response_format={"type": "json_schema", "json_schema": {
            "name": "shopping", "schema": LIST_SCHEMA, "strict": True}})
    for choice in answer.choices:
        if choice.message.tool_calls:
            assert choice.finish_reason == "tool_calls" and not choice.message.content
            Note.model_validate_json(choice.message.tool_calls[0].function.arguments)  # type: ignore[union-attr]
        else:
            assert choice.finish_reason == "stop", choice
            _valid(choice.message.content or "", LIST_SCHEMA)


def test_responses_api_forced_function_with_a_text_format(client: OpenAI) -> None:
    # instructor's RESPONSES_TOOLS mode: a forced function and a JSON-schema text format
    response = client.responses.create(
        model=CHAT_MODEL, input="Write a shopping list and save it as a note.",
        tools=[{"type": "function", "name": "save_note", "strict": True,
                "description": "Save a note of several lines",
                "parameters": NOTE_TOOL["function"]["parameters"]}],  # type: ignore[typeddict-item]
        tool_choice={"type": "function", "name": "save_note"}, temperature=1,
        max_output_tokens=400, text={"format": {"type": "json_schema", "name": "shopping",
                                                "schema": LIST_SCHEMA, "strict": True}})
    calls = [item for item in response.output if item.type == "function_call"]
    assert [c.name for c in calls] == ["save_note"]
    Note.model_validate_json(calls[0].arguments)
