"""Anthropic's Messages API with the official ``anthropic`` SDK as the client: on the bundled
model (the shared server), and on a server with keys enforced, configured as Claude Code is
(``ANTHROPIC_BASE_URL`` and ``x-api-key``)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest

from tests.helpers import InferdProcess, wait_for

CHAT_MODEL = "smollm2-135m-instruct"
WEATHER = {"name": "get_weather", "description": "The current weather of a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                            "required": ["city"]}}
GREEDY = {"temperature": 0}  # the SDK sends sampling fields only as extra body fields
ASK: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]


def prompt_tokens(usage: Any) -> int:
    """The whole prompt of a message's usage: the tokens read afresh and those read from the
    engine's prompt cache (the cache is on by default, so a repeated prompt has some)."""
    return int(usage.input_tokens) + int(usage.cache_read_input_tokens or 0)


@pytest.fixture(scope="module")
def claude(inferd_server: InferdProcess) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=inferd_server.url, api_key="unused", max_retries=0,
                             timeout=120) as c:
        yield c


def test_create_answers_with_a_text_block(claude: anthropic.Anthropic) -> None:
    message = claude.messages.create(
        model=CHAT_MODEL, max_tokens=20, extra_body=GREEDY,
        system=[{"type": "text", "text": "You answer briefly."}],
        messages=[{"role": "user", "content": [{"type": "text", "text": "Say hello."}]}])
    assert message.type == "message" and message.role == "assistant"
    assert message.id.startswith("msg_")
    assert message.content[0].type == "text" and message.content[0].text
    assert message.stop_reason in ("end_turn", "max_tokens")
    assert message.usage.input_tokens > 0 and 0 < message.usage.output_tokens <= 20


def test_max_tokens_is_the_stop_reason_when_cut(claude: anthropic.Anthropic) -> None:
    message = claude.messages.create(model=CHAT_MODEL, max_tokens=3, extra_body=GREEDY,
                                     messages=[{"role": "user", "content": "Tell a story."}])
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 3


def test_stream_is_parsed_by_the_sdk(claude: anthropic.Anthropic) -> None:
    kinds: list[str] = []
    with claude.messages.stream(model=CHAT_MODEL, max_tokens=20, extra_body=GREEDY,
                                messages=[{"role": "user", "content": "Say hello."}]) as stream:
        for event in stream:
            kinds.append(event.type)
        text = stream.get_final_text()
        final = stream.get_final_message()
    whole = claude.messages.create(model=CHAT_MODEL, max_tokens=20, extra_body=GREEDY,
                                   messages=[{"role": "user", "content": "Say hello."}])
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert "content_block_start" in kinds and "content_block_stop" in kinds
    assert "message_delta" in kinds
    assert text and whole.content[0].type == "text" and text == whole.content[0].text
    assert final.stop_reason == whole.stop_reason
    assert final.usage.output_tokens == whole.usage.output_tokens
    assert prompt_tokens(final.usage) == prompt_tokens(whole.usage) > 0


def test_a_repeated_prompt_reports_its_cached_tokens(claude: anthropic.Anthropic) -> None:
    system = "You are a careful assistant. " * 20  # a prefix long enough to be worth keeping
    ask: list[Any] = [{"role": "user", "content": "Name a colour."}]
    first = claude.messages.create(model=CHAT_MODEL, max_tokens=2, extra_body=GREEDY,
                                   system=system, messages=ask)
    again = claude.messages.create(model=CHAT_MODEL, max_tokens=2, extra_body=GREEDY,
                                   system=system, messages=ask)
    assert prompt_tokens(again.usage) == prompt_tokens(first.usage) > 100
    # the second visit finds at least the system prompt in the engine's cache
    assert again.usage.cache_read_input_tokens is not None
    assert again.usage.cache_read_input_tokens > 100
    assert again.usage.input_tokens < first.usage.input_tokens


def test_tool_use_loop(claude: anthropic.Anthropic) -> None:
    first = claude.messages.create(model=CHAT_MODEL, max_tokens=60, extra_body=GREEDY,
                                   tools=[WEATHER], tool_choice={"type": "any",  # type: ignore[list-item,typeddict-item]
                                                                 "disable_parallel_tool_use": True},
                                   messages=ASK)
    assert first.stop_reason == "tool_use"
    uses = [b for b in first.content if b.type == "tool_use"]
    assert len(uses) == 1 and uses[0].name == "get_weather"
    assert isinstance(uses[0].input, dict) and isinstance(uses[0].input["city"], str)
    messages = [*ASK, {"role": "assistant", "content": first.content},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id,
                                              "content": "21 degrees and sunny"}]}]
    final = claude.messages.create(model=CHAT_MODEL, max_tokens=30, extra_body=GREEDY,
                                   tools=[WEATHER], tool_choice={"type": "none"},  # type: ignore[list-item]
                                   messages=messages)
    assert final.content and final.content[0].type == "text" and final.content[0].text
    assert final.stop_reason in ("end_turn", "max_tokens")
    # the tool_use turn and its result reached the prompt
    alone = claude.messages.count_tokens(model=CHAT_MODEL, tools=[WEATHER],  # type: ignore[list-item]
                                         tool_choice={"type": "none"}, messages=ASK)
    assert prompt_tokens(final.usage) > alone.input_tokens + 20


def test_streamed_tool_use_has_input_json_deltas(claude: anthropic.Anthropic) -> None:
    partial = []
    with claude.messages.stream(
            model=CHAT_MODEL, max_tokens=60, extra_body=GREEDY, tools=[WEATHER],  # type: ignore[list-item]
            tool_choice={"type": "tool", "name": "get_weather"}, messages=ASK) as stream:
        for event in stream:
            if event.type == "content_block_delta" and event.delta.type == "input_json_delta":
                partial.append(event.delta.partial_json)
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    use = final.content[0]
    assert use.type == "tool_use" and use.name == "get_weather"
    assert len(partial) > 1 and json.loads("".join(partial)) == use.input


def test_count_tokens_matches_the_prompt_of_a_request(claude: anthropic.Anthropic) -> None:
    messages: list[Any] = [{"role": "user", "content": "Count the tokens of this question."}]
    counted = claude.messages.count_tokens(model=CHAT_MODEL, system="Be brief.",
                                           messages=messages)
    used = claude.messages.create(model=CHAT_MODEL, max_tokens=1, system="Be brief.",
                                  messages=messages)
    assert counted.input_tokens == prompt_tokens(used.usage)
    assert used.usage.cache_creation_input_tokens == 0
    longer = claude.messages.count_tokens(model=CHAT_MODEL, system="Be brief.", messages=[
        {"role": "user", "content": "Count the tokens of this much longer question, please."}])
    assert longer.input_tokens > counted.input_tokens


def test_errors_in_anthropic_shape(claude: anthropic.Anthropic,
                                   inferd_server: InferdProcess) -> None:
    with pytest.raises(anthropic.NotFoundError) as missing:
        claude.messages.create(model="no-such-model", max_tokens=5, messages=ASK)
    assert missing.value.status_code == 404
    with pytest.raises(anthropic.BadRequestError):
        claude.messages.create(model=CHAT_MODEL, max_tokens=0, messages=ASK)
    cases: list[dict[str, Any]] = [
        {"model": CHAT_MODEL, "messages": ASK},  # no max_tokens
        {"model": CHAT_MODEL, "max_tokens": 5, "messages": [{"role": "robot", "content": "x"}]},
        {"model": CHAT_MODEL, "max_tokens": 5, "temperature": 1.5, "messages": ASK},
        {"model": CHAT_MODEL, "max_tokens": 5, "frobnicate": 1, "messages": ASK},
        {"model": CHAT_MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "url", "url": "http://x/y.png"}}]}]},
    ]
    for body in cases:
        response = httpx.post(inferd_server.url + "/v1/messages", json=body, timeout=60)
        assert response.status_code == 400, (body, response.text)
        error = response.json()
        assert error["type"] == "error", error
        assert error["error"]["type"] == "invalid_request_error" and error["error"]["message"]
    broken = httpx.post(inferd_server.url + "/v1/messages", content=b"{not json",
                        headers={"content-type": "application/json"}, timeout=60)
    assert broken.status_code == 400 and broken.json()["type"] == "error"


# -- keys enforced, a client configured as Claude Code is -------------------------------

ADMIN_KEY = "sk-test-admin-anthropic-0123456789abcdef"


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InferdProcess]:
    env = {"INFERD_MODELS": json.dumps([{"name": "echo", "kind": "echo"}]),
           "INFERD_ADMIN_KEY": ADMIN_KEY, "INFERD_KEY_REFRESH_SECONDS": "0.3",
           "INFERD_USAGE_FLUSH_SECONDS": "0.2"}
    with InferdProcess(tmp_path_factory.mktemp("anthropic"), "--no-bundled", env=env) as proc:
        yield proc


def _new_key(server: InferdProcess, **fields: Any) -> dict[str, Any]:
    response = httpx.post(server.url + "/admin/v1/keys", json={"name": "claude", **fields},
                          headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30)
    assert response.status_code in (200, 201), response.text
    key: dict[str, Any] = response.json()
    return key


def _wait_accepted(client: anthropic.Anthropic) -> anthropic.types.Message:
    deadline = time.monotonic() + 20
    while True:  # a new key reaches the key ring within its refresh period
        try:
            return client.messages.create(model="echo", max_tokens=20,
                                          messages=[{"role": "user", "content": "one two"}])
        except anthropic.AuthenticationError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_claude_code_configuration(keyed: InferdProcess,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    key = _new_key(keyed)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", keyed.url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", key["key"])
    with anthropic.Anthropic(max_retries=0) as client:  # both from the environment
        message = _wait_accepted(client)
    assert message.content[0].type == "text" and message.content[0].text == "one two"
    with anthropic.Anthropic(api_key=None, auth_token=key["key"], max_retries=0) as bearer:
        assert bearer.messages.create(model="echo", max_tokens=5, messages=[
            {"role": "user", "content": "hi"}]).content[0].type == "text"
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # usage is written in batches
        records = httpx.get(keyed.url + "/admin/v1/usage/records",
                            params={"key_id": key["id"]}, headers=headers).json()["data"]
        if len(records) >= 2:
            break
        time.sleep(0.2)
    assert len(records) >= 2 and all(r["model"] == "echo" for r in records)


def test_wrong_key_is_401_in_anthropic_shape(keyed: InferdProcess) -> None:
    with anthropic.Anthropic(base_url=keyed.url, api_key="sk-wrong", max_retries=0) as client, \
            pytest.raises(anthropic.AuthenticationError) as refused:
        client.messages.create(model="echo", max_tokens=5,
                               messages=[{"role": "user", "content": "hi"}])
    body = refused.value.body
    assert isinstance(body, dict) and body["type"] == "error"
    assert body["error"]["type"] == "authentication_error"


def test_rate_limit_applies(keyed: InferdProcess) -> None:
    key = _new_key(keyed, rpm=1)
    with anthropic.Anthropic(base_url=keyed.url, api_key=key["key"], max_retries=0) as client:
        _wait_accepted(client)
        with pytest.raises(anthropic.RateLimitError) as limited:
            client.messages.create(model="echo", max_tokens=5,
                                   messages=[{"role": "user", "content": "again"}])
    assert limited.value.response.headers.get("retry-after")
    assert limited.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]


def test_max_tokens_over_the_context_uses_what_is_left(claude: anthropic.Anthropic) -> None:
    # Claude Code asks for 32000 tokens; the bundled model's context is 2048
    message = claude.messages.create(model=CHAT_MODEL, max_tokens=32000, extra_body=GREEDY,
                                     messages=[{"role": "user", "content": "Say hello."}])
    assert message.content and message.content[0].type == "text"
    assert 0 < prompt_tokens(message.usage) + message.usage.output_tokens <= 2048


def _count(client: anthropic.Anthropic, text: str = "count these words") -> int:
    counted = client.messages.count_tokens(model="echo",
                                           messages=[{"role": "user", "content": text}])
    return counted.input_tokens


def test_count_tokens_counts_against_rpm_and_is_recorded(keyed: InferdProcess) -> None:
    key = _new_key(keyed, rpm=2)
    with anthropic.Anthropic(base_url=keyed.url, api_key=key["key"], max_retries=0) as client:
        deadline = time.monotonic() + 20
        while True:  # a new key reaches the key ring within its refresh period
            try:
                first = _count(client)
                break
            except anthropic.AuthenticationError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        assert first > 0
        assert _count(client) == first
        with pytest.raises(anthropic.RateLimitError) as limited:
            _count(client)
    assert limited.value.response.headers.get("retry-after")
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}

    def counted() -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = httpx.get(
            keyed.url + "/admin/v1/usage/records", params={"key_id": key["id"]},
            headers=headers).json()["data"]
        return [r for r in records if r["endpoint"] == "count_tokens"]

    records = wait_for(lambda: len(counted()) >= 3 and counted())
    assert sorted(r["status"] for r in records) == [200, 200, 429]
    assert all(r["prompt_tokens"] == first and r["completion_tokens"] == 0
               for r in records if r["status"] == 200)


def test_responses_input_tokens_count_against_rpm_and_are_recorded(keyed: InferdProcess
                                                                   ) -> None:
    """``POST /v1/responses/input_tokens`` is limited and metered as ``count_tokens`` is."""
    import openai

    key = _new_key(keyed, rpm=2)
    client = openai.OpenAI(base_url=keyed.url + "/v1", api_key=key["key"], max_retries=0)
    deadline = time.monotonic() + 20
    while True:  # a new key reaches the key ring within its refresh period
        try:
            first = client.responses.input_tokens.count(model="echo", input="count these")
            break
        except openai.AuthenticationError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    assert first.input_tokens > 0
    client.responses.input_tokens.count(model="echo", input="count these")
    with pytest.raises(openai.RateLimitError):
        client.responses.input_tokens.count(model="echo", input="count these")
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}

    def counted() -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = httpx.get(
            keyed.url + "/admin/v1/usage/records", params={"key_id": key["id"]},
            headers=headers).json()["data"]
        return [r for r in records if r["endpoint"] == "responses.input_tokens"]

    records = wait_for(lambda: len(counted()) >= 3 and counted())
    assert sorted(r["status"] for r in records) == [200, 200, 429]
    assert all(r["prompt_tokens"] == first.input_tokens and r["completion_tokens"] == 0
               for r in records if r["status"] == 200)
