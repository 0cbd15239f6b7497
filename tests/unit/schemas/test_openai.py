"""``ChatCompletionRequest``: the deprecated ``functions``/``function_call`` read as tools, the
legacy answer shapes, and the fields current clients send."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from inferd.errors import InvalidRequest
from inferd.schemas.answers import ChatCompletion
from inferd.schemas.openai import ChatCompletionRequest, legacy_answer, legacy_stream

F = {"name": "f", "parameters": {"type": "object", "properties": {}}}
USER = [{"role": "user", "content": "hi"}]


def _request(**fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"model": "m", "messages": USER, **fields})


def test_functions_are_read_as_tools_and_a_replica_gets_tools_only() -> None:
    request = _request(functions=[F], function_call={"name": "f"})
    assert request.legacy_functions
    assert request.tools == [{"type": "function", "function": F}]
    assert request.tool_choice == {"type": "function", "function": {"name": "f"}}
    sent = request.model_dump(exclude_unset=True)
    assert "functions" not in sent and "function_call" not in sent
    assert sent["tools"] == request.tools and sent["parallel_tool_calls"] is False
    assert request.model_copy(update={"stream": True}).legacy_functions
    assert _request(functions=[F], function_call="auto").tool_choice == "auto"
    assert _request(functions=[F]).tool_choice is None
    assert not _request(tools=[{"type": "function", "function": F}]).legacy_functions


@pytest.mark.parametrize(("fields", "param"), [
    ({"functions": [F], "tools": [{"type": "function", "function": F}]}, "functions"),
    ({"functions": [F], "tool_choice": "auto"}, "functions"),
    ({"function_call": "auto"}, "function_call"),
    ({"function_call": {"name": "f"}, "tools": [{"type": "function", "function": F}]},
     "function_call"),
    ({"functions": [F], "function_call": "required"}, "function_call"),
    ({"functions": [F], "function_call": {"nom": "f"}}, "function_call"),
    ({"functions": [F], "function_call": {"name": "g"}}, "function_call"),
])
def test_inconsistent_legacy_fields_are_refused(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        _request(**fields)
    assert info.value.param == param and info.value.status == 400


def test_a_legacy_history_becomes_a_tool_call_and_its_result() -> None:
    request = _request(messages=[
        *USER, {"role": "assistant", "content": None,
                "function_call": {"name": "f", "arguments": "{\"a\": 1}"}},
        {"role": "function", "name": "f", "content": "42"}])
    assistant, result = request.messages[1], request.messages[2]
    assert assistant.model_extra == {"tool_calls": [{"id": "call_1", "type": "function",
                                                     "function": {"name": "f",
                                                                  "arguments": "{\"a\": 1}"}}]}
    assert result.role == "tool" and result.model_extra == {"tool_call_id": "call_1"}
    assert result.name == "f"


def test_current_client_fields_are_accepted_and_audio_output_refused() -> None:
    request = _request(reasoning_effort="medium", verbosity="high", modalities=["text"],
                       audio=None, prediction={"type": "content", "content": "hi"})
    assert request.model_extra == {}  # declared fields: no engine refuses them as unknown
    for fields, param in (({"modalities": ["text", "audio"]}, "modalities"),
                          ({"audio": {"voice": "alloy"}}, "audio"),
                          ({"reasoning_effort": "maximal"}, "reasoning_effort")):
        with pytest.raises(ValidationError) as info:
            _request(**fields)
        assert info.value.errors()[0]["loc"][0] == param


CALL = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}


def test_the_legacy_answer_has_a_function_call() -> None:
    result = ChatCompletion.model_validate({
        "id": "x", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": None, "tool_calls": [CALL]}}]})
    legacy = legacy_answer(result)
    assert legacy.wire()["choices"][0] == {
        "index": 0, "finish_reason": "function_call", "message": {
            "role": "assistant", "content": None,
            "function_call": {"name": "f", "arguments": "{}"}}}
    assert result.wire()["choices"][0]["message"]["tool_calls"] == [CALL]  # not changed
    text = ChatCompletion.model_validate({
        "id": "x", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "hello"}}]})
    assert legacy_answer(text).wire() == text.wire()


async def test_the_legacy_stream_has_function_call_pieces() -> None:
    async def chunks() -> Any:
        yield {"choices": [{"index": 0, "delta": {"role": "assistant", "tool_calls": [
            {"index": 0, "id": "call_1", "type": "function",
             "function": {"name": "f", "arguments": ""}}]}, "finish_reason": None}]}
        yield {"choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "function": {"arguments": "{}"}}]}, "finish_reason": None}]}
        yield {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}
        yield {"choices": [], "usage": {"total_tokens": 3}}

    out = [c async for c in legacy_stream(chunks())]
    assert [c["choices"][0]["delta"] if c["choices"] else None for c in out] == [
        {"role": "assistant", "function_call": {"name": "f", "arguments": ""}},
        {"function_call": {"arguments": "{}"}}, {}, None]
    assert out[2]["choices"][0]["finish_reason"] == "function_call"
    assert out[3] == {"choices": [], "usage": {"total_tokens": 3}}
