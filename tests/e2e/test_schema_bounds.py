"""End to end: no JSON schema, through any endpoint that takes one, crashes ``inferd serve``.

A schema asking for tens of thousands of repetitions (or repeating what can match nothing)
made llama.cpp's grammar parser overflow its stack: SIGSEGV, every request in flight lost.
Each shape here is refused with a 400 in the API's own error shape, and the server keeps
serving.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest
from openai import OpenAI

from tests.e2e.test_jobs import wait_done
from tests.helpers import InferdProcess

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m-instruct"
# (schema, the path inside it the refusal names)
ADVERSARIAL = [
    ({"type": "array", "items": {"type": "integer"}, "maxItems": 50000}, "maxItems"),
    ({"type": "object", "properties": {"s": {"type": "string", "maxLength": 40000}}},
     "properties.s.maxLength"),
    ({"type": "string", "pattern": "^a{0,30000}$"}, "pattern"),
    ({"type": "string", "pattern": "^(a?)*$"}, "pattern"),
]
IDS = ["maxItems", "maxLength", "pattern-quantifier", "pattern-empty-repeat"]


@pytest.fixture(scope="module")
def claude(inferd_server: InferdProcess) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=inferd_server.url, api_key="unused", max_retries=0,
                             timeout=120) as c:
        yield c


@pytest.fixture(autouse=True)
def still_serving(inferd_server: InferdProcess, client: OpenAI) -> Iterator[None]:
    """After each test the same process is alive and answers a plain request."""
    pid = inferd_server.proc.pid if inferd_server.proc else None
    yield
    assert inferd_server.proc is not None and inferd_server.proc.poll() is None, \
        inferd_server.log()
    assert inferd_server.proc.pid == pid
    answer = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert answer.choices[0].finish_reason in ("stop", "length")


def schema_format(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}


def openai_error(exc: openai.APIStatusError) -> dict[str, Any]:
    assert exc.status_code == 400
    body = exc.response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["type"] == "invalid_request_error"
    error: dict[str, Any] = body["error"]
    return error


@pytest.mark.parametrize(("schema", "path"), ADVERSARIAL, ids=IDS)
def test_chat_response_format(client: OpenAI, schema: dict[str, Any], path: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                       max_tokens=5, response_format=schema_format(schema))
    error = openai_error(info.value)
    assert error["param"] == f"response_format.json_schema.schema.{path}"
    assert "at most" in error["message"] or "can match nothing" in error["message"]


def test_chat_stream_response_format(client: OpenAI) -> None:
    schema, path = ADVERSARIAL[0]
    with pytest.raises(openai.BadRequestError) as info:
        stream = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=5,
            response_format=schema_format(schema), stream=True)
        list(stream)
    assert openai_error(info.value)["param"] == f"response_format.json_schema.schema.{path}"


@pytest.mark.parametrize(("schema", "path"), ADVERSARIAL, ids=IDS)
def test_chat_tool_parameters(client: OpenAI, schema: dict[str, Any], path: str) -> None:
    tools: Any = [{"type": "function", "function": {"name": "ok", "parameters": {
                      "type": "object", "properties": {"a": {"type": "integer"}}}}},
                  {"type": "function", "function": {"name": "bad", "parameters": {
                      "type": "object", "properties": {"v": schema}}}}]
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                       max_tokens=5, tools=tools)
    assert openai_error(info.value)["param"] == \
        f"tools[1].function.parameters.properties.v.{path}"


@pytest.mark.parametrize(("schema", "path"), ADVERSARIAL, ids=IDS)
def test_responses_text_format(client: OpenAI, schema: dict[str, Any], path: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model=MODEL, input="hi", max_output_tokens=16,
                                text={"format": {"type": "json_schema", "name": "x",
                                                 "schema": schema}})
    assert openai_error(info.value)["param"] == f"text.format.schema.{path}"


def test_responses_function_tool(client: OpenAI) -> None:
    schema, path = ADVERSARIAL[1]
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model=MODEL, input="hi", max_output_tokens=16,
                                tools=[{"type": "function", "name": "f", "strict": False,
                                        "parameters": schema}])
    error = openai_error(info.value)
    assert error["param"] == f"tools[0].parameters.{path}"
    assert error["message"].startswith(f"Invalid 'tools[0].parameters.{path}'")


def anthropic_error(exc: anthropic.APIStatusError) -> str:
    assert exc.status_code == 400
    body = exc.response.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    message: str = body["error"]["message"]
    return message


@pytest.mark.parametrize(("schema", "path"), ADVERSARIAL, ids=IDS)
def test_anthropic_output_config(claude: anthropic.Anthropic, schema: dict[str, Any],
                                 path: str) -> None:
    with pytest.raises(anthropic.BadRequestError) as info:
        claude.messages.create(model=MODEL, max_tokens=5,
                               messages=[{"role": "user", "content": "hi"}],
                               extra_body={"output_config": {"format": {
                                   "type": "json_schema", "schema": schema}}})
    assert anthropic_error(info.value).startswith(
        f"Invalid 'output_config.format.schema.{path}'")


@pytest.mark.parametrize(("schema", "path"), ADVERSARIAL, ids=IDS)
def test_anthropic_tool_input_schema(claude: anthropic.Anthropic, schema: dict[str, Any],
                                     path: str) -> None:
    with pytest.raises(anthropic.BadRequestError) as info:
        claude.messages.create(model=MODEL, max_tokens=5,
                               messages=[{"role": "user", "content": "hi"}],
                               tools=[{"name": "f", "input_schema": {
                                   "type": "object", "properties": {"v": schema}}}])
    assert anthropic_error(info.value).startswith(
        f"Invalid 'tools.0.input_schema.properties.v.{path}'")


@pytest.mark.parametrize(("schema", "path"), ADVERSARIAL[:2], ids=IDS[:2])
def test_a_job_fails_with_the_refusal(http: httpx.Client, schema: dict[str, Any],
                                      path: str) -> None:
    response = http.post("/v1/jobs", json={"endpoint": "/v1/chat/completions", "body": {
        "model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}],
        "response_format": schema_format(schema)}})
    assert response.status_code == 202, response.text
    done = wait_done(http, response.json()["id"])
    assert done["status"] == "failed"
    assert done["error"]["type"] == "invalid_request_error"
    assert done["error"]["param"] == f"response_format.json_schema.schema.{path}"
