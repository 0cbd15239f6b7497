"""Tool calls on the bundled llama.cpp model, with the official openai SDK as the client.

The bundled model's chat template has no tool support, so the tools go into the system prompt
and a grammar makes its answer a well-formed call; these tests hold the whole path to that.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI
from pydantic import BaseModel

CHAT_MODEL = "smollm2-135m-instruct"
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The current weather of a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city"]}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "description": "The local time in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


def test_required_call_is_parsed_into_tool_calls(client: OpenAI) -> None:
    answer = client.chat.completions.create(
        model=CHAT_MODEL, messages=ASK, tools=[WEATHER], tool_choice="required",  # type: ignore[list-item]
        parallel_tool_calls=False, temperature=0, max_tokens=60)
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    calls = choice.message.tool_calls or []
    assert len(calls) == 1
    assert calls[0].type == "function" and calls[0].id.startswith("call_")
    assert calls[0].function.name == "get_weather"  # type: ignore[union-attr]
    arguments = json.loads(calls[0].function.arguments)  # type: ignore[union-attr]
    assert isinstance(arguments["city"], str)
    assert set(arguments) <= {"city", "unit"}


def test_named_tool_choice_calls_that_function(client: OpenAI) -> None:
    answer = client.chat.completions.create(
        model=CHAT_MODEL, messages=ASK, tools=[WEATHER, TIME],  # type: ignore[list-item]
        tool_choice={"type": "function", "function": {"name": "get_time"}},
        temperature=0, max_tokens=60)
    calls = answer.choices[0].message.tool_calls or []
    assert [c.function.name for c in calls] == ["get_time"]  # type: ignore[union-attr]
    assert "city" in json.loads(calls[0].function.arguments)  # type: ignore[union-attr]


def test_tool_choice_none_answers_in_text(client: OpenAI) -> None:
    answer = client.chat.completions.create(
        model=CHAT_MODEL, messages=ASK, tools=[WEATHER], tool_choice="none",  # type: ignore[list-item]
        temperature=0, max_tokens=20)
    assert answer.choices[0].message.tool_calls is None
    assert answer.choices[0].message.content


def test_streamed_call_matches_the_whole_answer(client: OpenAI) -> None:
    kwargs: dict[str, Any] = {"model": CHAT_MODEL, "messages": ASK, "tools": [WEATHER],
                              "tool_choice": "required", "parallel_tool_calls": False,
                              "temperature": 0, "max_tokens": 60}
    whole = client.chat.completions.create(**kwargs).choices[0].message.tool_calls or []
    deltas = []
    finish = None
    for chunk in client.chat.completions.create(stream=True, **kwargs):
        for choice in chunk.choices:
            deltas += choice.delta.tool_calls or []
            finish = choice.finish_reason or finish
    assert finish == "tool_calls"
    first = deltas[0]
    assert first.index == 0 and first.id and first.type == "function"
    assert first.function is not None and first.function.name == "get_weather"
    assert len(deltas) > 2  # the arguments came in pieces, not in one
    assert all(d.index == 0 and d.id is None for d in deltas[1:])
    arguments = "".join((d.function.arguments or "") for d in deltas if d.function)
    assert json.loads(arguments) == json.loads(whole[0].function.arguments)  # type: ignore[union-attr]


def test_sdk_stream_helper_assembles_the_call(client: OpenAI) -> None:
    with client.chat.completions.stream(
            model=CHAT_MODEL, messages=ASK, tools=[WEATHER], tool_choice="required",  # type: ignore[list-item]
            parallel_tool_calls=False, temperature=0, max_tokens=60) as stream:
        names = [e.name for e in stream if e.type == "tool_calls.function.arguments.done"]
        final = stream.get_final_completion()
    assert names and names[0] == "get_weather"
    assert final.choices[0].message.tool_calls


def test_full_tool_loop(client: OpenAI) -> None:
    messages: list[Any] = list(ASK)
    first = client.chat.completions.create(
        model=CHAT_MODEL, messages=messages, tools=[WEATHER], tool_choice="required",  # type: ignore[list-item]
        parallel_tool_calls=False, temperature=0, max_tokens=60)
    call = (first.choices[0].message.tool_calls or [])[0]
    messages.append(first.choices[0].message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id,
                     "content": json.dumps({"temperature": 21, "sky": "sunny"})})
    final = client.chat.completions.create(
        model=CHAT_MODEL, messages=messages, tools=[WEATHER], tool_choice="none",  # type: ignore[list-item]
        temperature=0, max_tokens=40)
    assert final.choices[0].finish_reason in ("stop", "length")
    assert final.choices[0].message.content
    # the call and its result reached the prompt: it is longer than the question alone by them
    alone = client.chat.completions.create(
        model=CHAT_MODEL, messages=ASK, tools=[WEATHER], tool_choice="none",  # type: ignore[list-item]
        max_tokens=1)
    assert final.usage is not None and alone.usage is not None
    assert final.usage.prompt_tokens > alone.usage.prompt_tokens + 20


class City(BaseModel):
    name: str
    country: str


def test_parse_with_a_pydantic_model(client: OpenAI) -> None:
    answer = client.chat.completions.parse(
        model=CHAT_MODEL, messages=[{"role": "user", "content": "Name a city in France."}],
        response_format=City, temperature=0, max_tokens=60)
    parsed = answer.choices[0].message.parsed
    assert isinstance(parsed, City)


def test_parse_with_a_pydantic_function_tool(client: OpenAI) -> None:
    answer = client.chat.completions.parse(
        model=CHAT_MODEL, messages=[{"role": "user", "content": "Look up Paris, France."}],
        tools=[openai.pydantic_function_tool(City, name="lookup_city")],
        tool_choice="required", parallel_tool_calls=False, temperature=0, max_tokens=60)
    calls = answer.choices[0].message.tool_calls or []
    assert calls and calls[0].function.name == "lookup_city"
    assert isinstance(calls[0].function.parsed_arguments, City)


@pytest.mark.parametrize(("extra", "param"), [
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
     "tool_choice"),
    ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice"),
    ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]},
     "tools[0].function.name"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": "x"}}]},
     "tools[0].function.parameters"),
])
def test_bad_tools_are_400(http: httpx.Client, extra: dict[str, Any], param: str) -> None:
    response = http.post("/v1/chat/completions",
                         json={"model": CHAT_MODEL, "messages": ASK, **extra})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_auto_with_parallel_calls_gives_well_formed_answers(client: OpenAI) -> None:
    # auto: a plain answer or calls, whichever the model picks; either way well-formed
    answer = client.chat.completions.create(
        model=CHAT_MODEL, tools=[WEATHER, TIME], temperature=0, max_tokens=120,  # type: ignore[list-item]
        messages=[{"role": "user", "content": "Weather and time in Paris and Rome?"}])
    choice = answer.choices[0]
    if choice.message.tool_calls:
        assert choice.message.content is None
        assert choice.finish_reason in ("tool_calls", "length")
        assert len(choice.message.tool_calls) <= 8
        for call in choice.message.tool_calls:
            assert call.function.name in ("get_weather", "get_time")  # type: ignore[union-attr]
            assert isinstance(json.loads(call.function.arguments)["city"], str)  # type: ignore[union-attr]
    else:
        assert choice.message.content and not choice.message.content.startswith("<tool_call>")
        assert choice.finish_reason in ("stop", "length")
