"""Chat chunks → Responses stream events, judged by the ``openai`` SDK's own types (an event
it does not know, or a field it requires and misses, fails validation)."""

from __future__ import annotations

from typing import Any

import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from inferd.errors import InvalidRequest
from inferd.responses.events import ResponseStream
from inferd.schemas.responses import ResponseCreateRequest, base_response, to_chat

EVENTS: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)


def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def run(chunks: list[dict[str, Any]]) -> tuple[list[Any], ResponseStream]:
    request = ResponseCreateRequest(model="m", input="hi")
    state = ResponseStream(base_response(request, "resp_1", "in_progress"))
    raw = [*state.start()]
    for c in chunks:
        raw.extend(state.feed(c))
    raw.extend(state.finish())
    return [EVENTS.validate_python({**e, "sequence_number": i})
            for i, e in enumerate(raw)], state


def test_text_then_tool_calls() -> None:
    events, state = run([
        chunk({"role": "assistant", "content": "Let me look."}),
        chunk({"tool_calls": [{"index": 0, "id": "call_a", "type": "function",
                               "function": {"name": "weather", "arguments": ""}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}),
        chunk({}, "tool_calls"),
        {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 7}},
    ])
    types = [e.type for e in events]
    assert types == [
        "response.created", "response.in_progress", "response.output_item.added",
        "response.content_part.added", "response.output_text.delta",
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.delta", "response.output_text.done",
        "response.content_part.done", "response.output_item.done",
        "response.function_call_arguments.done", "response.output_item.done",
        "response.completed"]
    final = Response.model_validate(state.response)
    assert final.output_text == "Let me look."
    call = final.output[1]
    assert call.type == "function_call" and call.arguments == '{"city":"Paris"}'
    assert call.call_id == "call_a" and call.name == "weather"
    assert final.usage is not None and final.usage.total_tokens == 12


def test_cut_off_by_the_token_limit_is_incomplete() -> None:
    events, state = run([chunk({"content": "abc"}), chunk({}, "length")])
    assert events[-1].type == "response.incomplete"
    assert state.response["incomplete_details"] == {"reason": "max_output_tokens"}


def test_items_become_chat_messages() -> None:
    request = ResponseCreateRequest.model_validate({
        "model": "m", "instructions": "Be brief.",
        "tools": [{"type": "function", "name": "weather", "parameters": {"type": "object"}}],
        "tool_choice": {"type": "function", "name": "weather"},
        "text": {"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}}},
        "input": [
            {"role": "user", "content": "Weather in Paris?"},
            {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
            {"type": "message", "role": "assistant",
             "content": [{"type": "output_text", "text": "Sunny."}]}]})
    chat = to_chat(request, [dict(i) for i in request.input])  # type: ignore[union-attr]
    roles = [m.role for m in chat.messages]
    assert roles == ["system", "user", "assistant", "tool", "assistant"]
    assert chat.messages[2].model_extra["tool_calls"][0]["function"]["name"] == "weather"  # type: ignore[index]
    assert chat.tools == [{"type": "function", "function": {
        "name": "weather", "parameters": {"type": "object"}}}]
    assert chat.tool_choice == {"type": "function", "function": {"name": "weather"}}
    assert chat.response_format is not None and chat.response_format.type == "json_schema"
    with pytest.raises(InvalidRequest):
        to_chat(request, [{"type": "computer_call"}])
