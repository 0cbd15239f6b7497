"""Fields current clients send to ``/v1/chat/completions``, through the official openai SDK
against the bundled model: accepted where they do not change the answer's meaning
(``reasoning_effort``, ``verbosity``, ``prediction``, ``modalities: ["text"]``,
``audio: null``), refused by name where they would (audio output), and the deprecated
``functions``/``function_call`` answered in their own legacy shape."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from tests.helpers import wait_for

CHAT_MODEL = "smollm2-135m-instruct"
WEATHER = {"name": "get_weather", "description": "The current weather of a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                          "required": ["city"]}}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
HELLO = [{"role": "user", "content": "Say hello."}]


def test_fields_of_current_clients_are_accepted_and_audio_output_refused(client: OpenAI) -> None:
    plain = client.chat.completions.create(model=CHAT_MODEL, messages=HELLO,  # type: ignore[arg-type]
                                           temperature=0, max_tokens=8)
    for extra in ({"reasoning_effort": "high"}, {"reasoning_effort": "minimal"},
                  {"verbosity": "low"}, {"modalities": ["text"]}, {"audio": None},
                  {"prediction": {"type": "content", "content": "Hello there!"}},
                  {"prediction": {"type": "content",
                                  "content": [{"type": "text", "text": "Hello"}]}}):
        answer = client.chat.completions.create(model=CHAT_MODEL, messages=HELLO,  # type: ignore[arg-type]
                                                temperature=0, max_tokens=8, **extra)
        # ignored by a model that does no reasoning: the same (greedy) answer
        assert answer.choices[0].message.content == plain.choices[0].message.content, extra
    # what would change the answer's meaning (audio output), or is no value of the field
    for extra, param in (({"modalities": ["text", "audio"]}, "modalities"),
                         ({"modalities": ["audio"]}, "modalities"),
                         ({"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
                         ({"reasoning_effort": "extreme"}, "reasoning_effort"),
                         ({"verbosity": "loud"}, "verbosity"),
                         ({"prediction": {"type": "file", "content": "x"}}, "prediction.type")):
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(model=CHAT_MODEL, messages=HELLO,  # type: ignore[arg-type]
                                           max_tokens=4, **extra)
        body = info.value.body
        assert isinstance(body, dict) and body["param"] == param, body


def test_functions_are_answered_with_a_function_call(client: OpenAI) -> None:
    answer = client.chat.completions.create(
        model=CHAT_MODEL, messages=ASK, functions=[WEATHER],  # type: ignore[arg-type, list-item]
        function_call={"name": "get_weather"}, temperature=0, max_tokens=60)
    choice = answer.choices[0]
    assert choice.finish_reason == "function_call"
    assert choice.message.tool_calls is None and choice.message.content is None
    call = choice.message.function_call
    assert call is not None and call.name == "get_weather"
    assert isinstance(json.loads(call.arguments)["city"], str)
    # the same request with tools gets the same call as a tool call
    tools = client.chat.completions.create(
        model=CHAT_MODEL, messages=ASK, tools=[{"type": "function", "function": WEATHER}],  # type: ignore[arg-type, list-item]
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        temperature=0, max_tokens=60)
    [tool_call] = tools.choices[0].message.tool_calls or []
    assert tool_call.function.arguments == call.arguments  # type: ignore[union-attr]
    # the call and its result, in the legacy shape, continue the conversation
    follow = client.chat.completions.create(
        model=CHAT_MODEL, functions=[WEATHER], function_call="none",  # type: ignore[arg-type, list-item]
        messages=[*ASK, {"role": "assistant", "content": None,  # type: ignore[list-item]
                         "function_call": {"name": call.name, "arguments": call.arguments}},
                  {"role": "function", "name": "get_weather", "content": "sunny, 21 C"}],
        temperature=0, max_tokens=12)
    assert follow.choices[0].message.function_call is None
    assert follow.choices[0].message.content
    assert follow.choices[0].finish_reason in ("stop", "length")
    # inconsistent legacy fields are refused, naming the field
    for extra, param in (
            ({"functions": [WEATHER], "tools": [{"type": "function", "function": WEATHER}]},
             "functions"),
            ({"functions": [WEATHER], "tool_choice": "auto"}, "functions"),
            ({"function_call": "auto"}, "function_call"),
            ({"functions": [WEATHER], "function_call": "required"}, "function_call"),
            ({"functions": [WEATHER], "function_call": {"name": "get_time"}}, "function_call")):
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(model=CHAT_MODEL, messages=ASK, max_tokens=4,  # type: ignore[arg-type]
                                           **extra)
        body = info.value.body
        assert isinstance(body, dict) and body["param"] == param, body
        assert body["code"] == "invalid_value", body


def test_functions_stream_function_call_pieces(client: OpenAI) -> None:
    name, arguments, finish = "", "", None
    for chunk in client.chat.completions.create(
            model=CHAT_MODEL, messages=ASK, functions=[WEATHER],  # type: ignore[arg-type, list-item]
            function_call={"name": "get_weather"}, temperature=0, max_tokens=60, stream=True):
        for choice in chunk.choices:
            assert choice.delta.tool_calls is None
            if choice.delta.function_call is not None:
                name += choice.delta.function_call.name or ""
                arguments += choice.delta.function_call.arguments or ""
            finish = choice.finish_reason or finish
    assert name == "get_weather" and finish == "function_call"
    whole = client.chat.completions.create(
        model=CHAT_MODEL, messages=ASK, functions=[WEATHER],  # type: ignore[arg-type, list-item]
        function_call={"name": "get_weather"}, temperature=0, max_tokens=60)
    assert whole.choices[0].message.function_call is not None
    assert json.loads(arguments) == json.loads(whole.choices[0].message.function_call.arguments)


def test_a_functions_job_answers_in_the_legacy_shape(http: httpx.Client) -> None:
    body = {"model": CHAT_MODEL, "messages": ASK, "functions": [WEATHER],
            "function_call": {"name": "get_weather"}, "temperature": 0, "max_tokens": 60}
    accepted = http.post("/v1/chat/completions", json=body, headers={"Prefer": "respond-async"})
    assert accepted.status_code == 202, accepted.text

    def finished() -> dict[str, Any] | None:
        job: dict[str, Any] = http.get(f"/v1/jobs/{accepted.json()['id']}").json()
        return job if job["status"] in ("completed", "failed") else None

    job = wait_for(finished, within=300, what="the job to finish")
    assert job["status"] == "completed", job
    [choice] = job["result"]["choices"]
    assert choice["finish_reason"] == "function_call" and "tool_calls" not in choice["message"]
    assert choice["message"]["function_call"]["name"] == "get_weather"
    assert isinstance(json.loads(choice["message"]["function_call"]["arguments"])["city"], str)
