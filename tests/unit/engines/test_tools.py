"""Tool plans, prompts, grammars and the parsing of calls, without a model."""

from __future__ import annotations

import json
from typing import Any

import pytest

from inferd.anthropic.events import events
from inferd.engines import tools
from inferd.engines.toolparse import ToolStream, parse, with_tool_calls
from inferd.errors import InvalidRequest
from inferd.schemas.answers import ChatChoice, ChatMessageOut
from inferd.schemas.openai import ChatCompletionRequest

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
CALLS = ('<tool_call>\n{"name": "get_weather", "arguments": { "city": "Pa\\"ris" , '
         '"near": {"a": [1, {"b": 2}]}}}\n</tool_call>\n<tool_call>\n'
         '{"name": "get_time", "arguments": {}}\n</tool_call>')


def request(**fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields})


def test_plan_follows_tool_choice() -> None:
    assert tools.plan(request()) is None
    assert tools.plan(request(tools=[WEATHER], tool_choice="none")) is None
    auto = tools.plan(request(tools=[WEATHER]))
    assert auto is not None and not auto.required and auto.parallel
    required = tools.plan(request(tools=[WEATHER], tool_choice="required",
                                  parallel_tool_calls=False))
    assert required is not None and required.required and not required.parallel
    named = tools.plan(request(tools=[WEATHER, {"type": "function", "function": {"name": "x"}}],
                               tool_choice={"type": "function", "function": {"name": "x"}}))
    assert named is not None and [f["name"] for f in named.functions] == ["x"]


@pytest.mark.parametrize("fields", [
    {"tool_choice": "auto"},
    {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
    {"tools": [{"type": "code_interpreter"}]},
])
def test_plan_refuses_what_it_cannot_honour(fields: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest):
        tools.plan(request(**fields))


def test_grammar_compiles_and_requires_a_call_when_asked() -> None:
    required = tools.ToolPlan(tools._functions([WEATHER]), required=True, parallel=False)
    text = tools.grammar_text(required)
    assert text.startswith("root ::= calls\n") and "text ::=" not in text
    assert tools.grammar(required) is not None
    auto = tools.ToolPlan(required.functions, required=False, parallel=True)
    assert "root ::= calls | text" in tools.grammar_text(auto)


def test_messages_carry_calls_and_results() -> None:
    req = request(messages=[
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}])
    rendered = tools.render_messages(req.messages, native=False, model="smol")
    assert rendered[1]["content"] == tools.call_text("get_weather", {"city": "Paris"})
    assert rendered[2]["role"] == "user" and '"name": "get_weather"' in rendered[2]["content"]
    assert "sunny" in rendered[2]["content"]
    native = tools.render_messages(req.messages, native=True, model="smol")
    assert native[2] == {"role": "tool", "content": "sunny", "name": "get_weather",
                         "tool_call_id": "call_1"}


def test_parse_whole_answer() -> None:
    content, calls = parse(CALLS)
    assert content is None
    assert [c.function.name for c in calls] == ["get_weather", "get_time"]
    assert json.loads(calls[0].function.arguments)["city"] == 'Pa"ris'
    assert parse("Just text.") == ("Just text.", [])
    # cut short by max_tokens before the name is whole, and no functions to complete it from:
    # no call to report, and no markup as content either
    assert parse('<tool_call>\n{"name": "get_wea') == (None, [])


@pytest.mark.parametrize("step", [1, 2, 3, 5, 11, 1000])
def test_stream_gives_the_same_calls_in_any_pieces(step: int) -> None:
    stream = ToolStream()
    deltas = []
    for start in range(0, len(CALLS), step):
        deltas += stream.feed(CALLS[start:start + step])
    deltas += stream.finish()
    calls: dict[int, dict[str, str]] = {}
    for delta in deltas:
        (call,) = delta["tool_calls"]
        entry = calls.setdefault(call["index"], {"name": "", "arguments": ""})
        if "id" in call:  # the first delta of a call names it
            assert call["function"]["arguments"] == "" and not entry["name"]
            entry["name"] = call["function"]["name"]
        entry["arguments"] += call["function"]["arguments"]
    _, whole = parse(CALLS)
    assert [c["name"] for c in calls.values()] == [c.function.name for c in whole]
    assert [json.loads(c["arguments"]) for c in calls.values()] == \
        [json.loads(c.function.arguments) for c in whole]


def _streamed(text: str, step: int, names: list[str]) -> list[dict[str, str]]:
    """The calls a client assembles from the deltas of ``text`` fed ``step`` characters at a
    time."""
    stream = ToolStream(names)
    deltas = []
    for start in range(0, len(text), step):
        deltas += stream.feed(text[start:start + step])
    deltas += stream.finish()
    calls: dict[int, dict[str, str]] = {}
    for delta in deltas:
        assert "content" not in delta
        (call,) = delta["tool_calls"]
        entry = calls.setdefault(call["index"], {"name": "", "arguments": ""})
        entry["name"] += call["function"].get("name", "")
        entry["arguments"] += call["function"]["arguments"]
    return list(calls.values())


@pytest.mark.parametrize("step", [1, 4, 1000])
def test_a_closing_tag_inside_a_string_does_not_end_the_call(step: int) -> None:
    text = ('<tool_call>\n{"name": "save", "arguments": {"body": "a </tool_call> b}"}}'
            '\n</tool_call>')
    content, calls = parse(text, ["save"])
    assert content is None
    assert [json.loads(c.function.arguments) for c in calls] == [
        {"body": "a </tool_call> b}"}]
    assert [json.loads(c["arguments"]) for c in _streamed(text, step, ["save"])] == [
        {"body": "a </tool_call> b}"}]


@pytest.mark.parametrize("step", [1, 3, 1000])
@pytest.mark.parametrize("cut", [27, 40, 48, 49, 60, 75, 86, 90, 100])
def test_a_call_cut_short_is_still_a_call(cut: int, step: int) -> None:
    # max_tokens may end the answer anywhere in a call: it is reported as the call so far
    whole = ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", '
             '"unit": "celsius"}}\n</tool_call>')
    text = whole[:cut]
    names = ["get_weather", "get_time"]
    content, calls = parse(text, names)
    assert content is None
    assert [c.function.name for c in calls] == ["get_weather"]
    arguments = calls[0].function.arguments
    assert '{"city": "Paris", "unit": "celsius"}'.startswith(arguments)
    assert _streamed(text, step, names) == [{"name": "get_weather", "arguments": arguments}]


def test_a_call_cut_before_its_name_is_known() -> None:
    names = ["get_weather", "get_time"]
    for text in ("<", "<tool_call>", '<tool_call>\n{"name": "get_'):
        assert parse(text, names) == (None, [])  # either function: nothing to report
        assert _streamed(text, 1, names) == []
    content, calls = parse('<tool_call>\n{"name": "get_t', names)
    assert content is None and calls[0].function.wire() == {"name": "get_time", "arguments": ""}
    content, calls = parse("<tool", ["get_time"])  # one function: it is that one
    assert content is None and calls[0].function.wire() == {"name": "get_time", "arguments": ""}
    # a second call cut before its name is not guessed
    first = '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>\n<tool'
    assert [c.function.name for c in parse(first, ["get_time"])[1]] == ["get_time"]


def test_with_tool_calls_keeps_length_for_a_cut_call() -> None:
    choice = ChatChoice(index=0, message=ChatMessageOut(role="assistant", content="x"),
                        finish_reason="length")
    with_tool_calls(choice, '<tool_call>\n{"name": "f", "arguments": {"a": "b', ["f"])
    assert choice.finish_reason == "length"
    assert choice.message.content is None
    assert choice.message.tool_calls is not None
    assert choice.message.tool_calls[0].function.wire() == {"name": "f",
                                                            "arguments": '{"a": "b'}
    done = ChatChoice(index=0, message=ChatMessageOut(role="assistant", content="x"),
                      finish_reason="stop")
    with_tool_calls(done, '<tool_call>\n{"name": "f", "arguments": {"a":1}}\n</tool_call>', ["f"])
    assert done.finish_reason == "tool_calls"
    assert done.message.tool_calls is not None
    assert done.message.tool_calls[0].function.arguments == '{"a": 1}'


def test_stream_of_text_stays_text() -> None:
    stream = ToolStream()
    assert stream.feed(" <to") == []  # could still become a call
    assert stream.feed("o late") == [{"content": " <too late"}]
    assert stream.feed("!") == [{"content": "!"}]
    assert not stream.called


async def test_anthropic_events_for_text_then_a_tool() -> None:
    async def chunks() -> Any:
        yield {"choices": [{"delta": {"role": "assistant", "content": "Let me see."}}]}
        yield {"choices": [{"delta": {"tool_calls": [{"index": 0, "id": "call_1",
               "type": "function", "function": {"name": "f", "arguments": ""}}]}}]}
        yield {"choices": [{"delta": {"tool_calls": [{"index": 0,
               "function": {"arguments": '{"a": 1}'}}]}}]}
        yield {"choices": [{"delta": {}, "finish_reason": "tool_calls"}]}
        yield {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 5}}

    out = [event async for event in events(chunks(), "m")]
    names = [name for name, _ in out]
    assert names == ["message_start", "ping", "content_block_start", "content_block_delta",
                     "content_block_stop", "content_block_start", "content_block_delta",
                     "content_block_stop", "message_delta", "message_stop"]
    assert out[5][1]["content_block"] == {"type": "tool_use", "id": "call_1", "name": "f",
                                          "input": {}}
    assert out[6][1]["delta"] == {"type": "input_json_delta", "partial_json": '{"a": 1}'}
    assert out[8][1]["delta"]["stop_reason"] == "tool_use"
    assert out[8][1]["usage"] == {"input_tokens": 7, "cache_creation_input_tokens": 0,
                                  "cache_read_input_tokens": 0, "output_tokens": 5}


def test_grammar_takes_nested_definitions_and_unsupported_schemas() -> None:
    from pydantic import BaseModel

    class Inner(BaseModel):
        x: int

    class Outer(BaseModel):
        inner: Inner
        tags: list[str]

    nested = {"type": "function", "function": {"name": "outer",
                                               "parameters": Outer.model_json_schema()}}
    odd = {"type": "function", "function": {"name": "odd", "parameters": {
        "type": "object", "properties": {"x": {"type": "no-such-type"}}}}}
    plan = tools.ToolPlan(tools._functions([nested, odd]), required=True, parallel=False)
    text = tools.grammar_text(plan)
    assert '"\\"inner\\""' in text  # the nested model's fields are in the grammar
    assert tools.grammar(plan) is not None  # and the unsupported schema fell back
