"""End to end: ``inferd serve`` with the real bundled models, the official openai SDK as client."""

from __future__ import annotations

import base64
import json
import math
import struct
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from tests.helpers import InferdProcess, wait_for
from tests.openapi_ref import require_spec, validate

CHAT_MODEL = "smollm2-135m-instruct"
EMBED_MODEL = "all-minilm-l6-v2"
HELLO = [{"role": "user", "content": "Write one sentence about the sea."}]




def test_reference_spec_is_available() -> None:
    """The answers below are checked against the OpenAI spec only when it is beside us."""
    require_spec()
    with pytest.raises(Exception, match="is not of type"):
        validate("CreateChatCompletionResponse", {"id": 1, "choices": [], "created": 0,
                                                  "model": "m", "object": "chat.completion"})


def test_plain_answer(client: OpenAI) -> None:
    answer = client.chat.completions.create(model=CHAT_MODEL, messages=HELLO, max_tokens=30)
    assert answer.choices[0].message.role == "assistant"
    assert answer.choices[0].message.content
    assert answer.choices[0].finish_reason in {"stop", "length"}
    assert answer.usage is not None
    assert answer.usage.prompt_tokens > 5
    assert 0 < answer.usage.completion_tokens <= 30
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens
    validate("CreateChatCompletionResponse", answer.model_dump(exclude_unset=True))


def test_content_as_text_parts_and_system_role(client: OpenAI) -> None:
    answer = client.chat.completions.create(
        model=CHAT_MODEL, max_tokens=10, temperature=0,
        messages=[{"role": "system", "content": "You answer briefly."},
                  {"role": "user", "content": [{"type": "text", "text": "Name a colour."}]}])
    assert answer.choices[0].message.content


def test_streamed_answer_with_usage(client: OpenAI) -> None:
    stream = client.chat.completions.create(model=CHAT_MODEL, messages=HELLO, max_tokens=20,
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] in {"stop", "length"}
    assert all(f is None for f in finishes[:-1])
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert 0 < last.usage.completion_tokens <= 20
    for chunk in chunks:
        validate("CreateChatCompletionStreamResponse", chunk.model_dump(exclude_unset=True))


def test_stream_wire_format_ends_with_done(http: httpx.Client) -> None:
    body = {"model": CHAT_MODEL, "messages": HELLO, "max_tokens": 5, "stream": True}
    with http.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line]
    assert events[-1] == "data: [DONE]"
    payloads = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    # without include_usage there is no usage chunk
    assert all(p["choices"] for p in payloads)


def test_max_tokens_gives_finish_reason_length(client: OpenAI) -> None:
    answer = client.chat.completions.create(
        model=CHAT_MODEL, max_tokens=5, temperature=0,
        messages=[{"role": "user", "content": "Tell me a long story about a dragon."}])
    assert answer.choices[0].finish_reason == "length"
    assert answer.usage is not None and answer.usage.completion_tokens == 5
    answer = client.chat.completions.create(
        model=CHAT_MODEL, max_completion_tokens=4, temperature=0,
        messages=[{"role": "user", "content": "Tell me a long story about a dragon."}])
    assert answer.choices[0].finish_reason == "length"
    assert answer.usage is not None and answer.usage.completion_tokens == 4


def test_same_seed_same_text(client: OpenAI) -> None:
    def run(temperature: float, seed: int) -> str:
        answer = client.chat.completions.create(model=CHAT_MODEL, messages=HELLO, max_tokens=25,
                                                temperature=temperature, seed=seed)
        return answer.choices[0].message.content or ""

    assert run(0, 7) == run(0, 7)
    assert run(0.9, 1234) == run(0.9, 1234)


def test_stop_sequence_cuts_the_answer(client: OpenAI) -> None:
    prompt = "The list of numbers: 1, 2, 3, 4, 5,"
    full = client.completions.create(model=CHAT_MODEL, prompt=prompt, max_tokens=20,
                                     temperature=0).choices[0].text
    words = full.split()
    assert len(words) >= 4, full
    stop = words[2]
    cut = client.completions.create(model=CHAT_MODEL, prompt=prompt, max_tokens=20,
                                    temperature=0, stop=[stop])
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].text == full[: full.index(stop)]
    chat_full = client.chat.completions.create(model=CHAT_MODEL, messages=HELLO, max_tokens=20,
                                               temperature=0).choices[0].message.content or ""
    chat_stop = chat_full.split()[2]
    chat_cut = client.chat.completions.create(model=CHAT_MODEL, messages=HELLO, max_tokens=20,
                                              temperature=0, stop=chat_stop)
    assert chat_cut.choices[0].finish_reason == "stop"
    assert chat_cut.choices[0].message.content == chat_full[: chat_full.index(chat_stop)]


def test_json_object_output_parses(client: OpenAI) -> None:
    answer = client.chat.completions.create(
        model=CHAT_MODEL, max_tokens=80, temperature=0, response_format={"type": "json_object"},
        messages=[{"role": "user", "content": "Describe a cat as a JSON object."}])
    content = answer.choices[0].message.content or ""
    if answer.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(content), dict)
    else:  # cut by max_tokens: still a JSON object being written
        assert content.lstrip().startswith("{")


def test_json_schema_output_follows_the_schema(client: OpenAI) -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20},
                                               "age": {"type": "integer"}},
              "required": ["name", "age"], "additionalProperties": False}
    answer = client.chat.completions.create(
        model=CHAT_MODEL, max_tokens=60, temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "person",
                                                                "schema": schema}},
        messages=[{"role": "user", "content": "Invent a person."}])
    assert answer.choices[0].finish_reason == "stop"
    value = json.loads(answer.choices[0].message.content or "")
    assert set(value) == {"name", "age"}
    assert isinstance(value["name"], str) and isinstance(value["age"], int)


def test_text_completions_with_a_list_of_prompts(client: OpenAI) -> None:
    answer = client.completions.create(model=CHAT_MODEL, prompt=["Once upon a time",
                                                                 "The sky is"], max_tokens=8)
    assert [c.index for c in answer.choices] == [0, 1]
    assert all(c.text for c in answer.choices)
    assert answer.usage is not None and answer.usage.completion_tokens <= 16
    validate("CreateCompletionResponse", answer.model_dump(exclude_unset=True))
    stream = client.completions.create(model=CHAT_MODEL, prompt="Once upon a time",
                                       max_tokens=6, stream=True)
    assert "".join(c.choices[0].text for c in stream if c.choices)


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def test_embeddings_put_cat_near_kitten(client: OpenAI) -> None:
    result = client.embeddings.create(model=EMBED_MODEL,
                                      input=["cat", "kitten", "stock market"])
    cat, kitten, stocks = (d.embedding for d in result.data)
    assert len(cat) == 384
    assert _cosine(cat, kitten) > _cosine(cat, stocks) + 0.2
    assert result.usage.prompt_tokens > 0
    validate("CreateEmbeddingResponse", result.model_dump(exclude_unset=True))


def test_embeddings_base64_matches_float(http: httpx.Client) -> None:
    floats = http.post("/v1/embeddings", json={"model": EMBED_MODEL, "input": "cat"}).json()
    packed = http.post("/v1/embeddings", json={"model": EMBED_MODEL, "input": "cat",
                                               "encoding_format": "base64"}).json()
    raw = base64.b64decode(packed["data"][0]["embedding"])
    decoded = struct.unpack(f"<{len(raw) // 4}f", raw)
    assert decoded == pytest.approx(floats["data"][0]["embedding"], abs=1e-6)


def test_models_list_and_retrieve(client: OpenAI) -> None:
    ids = {m.id for m in client.models.list()}
    assert {CHAT_MODEL, EMBED_MODEL} <= ids
    assert client.models.retrieve(CHAT_MODEL).id == CHAT_MODEL
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_health_and_ready(http: httpx.Client) -> None:
    health = http.get("/health").json()
    assert set(health) == {"status", "uptime_seconds"}
    assert health["status"] == "ok" and health["uptime_seconds"] > 0
    ready = http.get("/ready")
    assert ready.status_code == 200
    assert ready.json()["models"] == {CHAT_MODEL: True, EMBED_MODEL: True}


# ------------------------------------------------------------------------------ errors

def _error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    validate("ErrorResponse", body)
    error: dict[str, Any] = body["error"]
    return error


def test_unknown_model_is_404_model_not_found(client: OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-nope", messages=HELLO)
    assert info.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="gpt-nope", input="x")


def test_malformed_json_is_400(http: httpx.Client) -> None:
    error = _error(http.post("/v1/chat/completions", content=b"{not json",
                             headers={"content-type": "application/json"}), 400)
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize(("body", "param"), [
    ({"model": CHAT_MODEL}, "messages"),
    ({"model": CHAT_MODEL, "messages": []}, "messages"),
    ({"model": CHAT_MODEL, "messages": [{"role": "wizard", "content": "x"}]},
     "messages[0].role"),
    ({"model": CHAT_MODEL, "messages": HELLO, "temperature": 5}, "temperature"),
    ({"model": CHAT_MODEL, "messages": HELLO, "max_tokens": 0}, "max_tokens"),
    ({"model": CHAT_MODEL, "messages": HELLO, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"messages": HELLO}, "model"),
    ({"model": CHAT_MODEL, "messages": HELLO, "n": 17}, "n"),  # n up to 16
    ({"model": CHAT_MODEL, "messages": HELLO,
      "tools": [{"type": "retrieval", "function": {"name": "f"}}]}, "tools[0]"),
    ({"model": CHAT_MODEL, "messages": HELLO, "tool_choice": "required"}, "tool_choice"),
    ({"model": CHAT_MODEL, "messages": HELLO, "frobnicate": True}, "frobnicate"),
    ({"model": CHAT_MODEL, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}]},
     "messages[0].content[0]"),  # the bundled model reads text only
    ({"model": CHAT_MODEL, "messages": [*HELLO, {"role": "user", "content": [
        {"type": "text", "text": "and this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]},
     "messages[1].content[1]"),
])
def test_invalid_fields_are_400_naming_the_field(http: httpx.Client, body: dict[str, Any],
                                                 param: str) -> None:
    error = _error(http.post("/v1/chat/completions", json=body), 400)
    assert error["param"] == param, error


def test_invalid_embedding_input_is_400(http: httpx.Client) -> None:
    assert _error(http.post("/v1/embeddings", json={"model": EMBED_MODEL, "input": []}),
                  400)["param"] == "input"
    assert _error(http.post("/v1/embeddings", json={"model": CHAT_MODEL, "input": "x"}),
                  400)["param"] == "model"
    long_text = "word " * 400
    assert _error(http.post("/v1/embeddings", json={"model": EMBED_MODEL, "input": long_text}),
                  400)["code"] == "context_length_exceeded"


def test_prompt_longer_than_context_is_400(http: httpx.Client) -> None:
    long_prompt = "hello " * 3000
    error = _error(http.post("/v1/chat/completions", json={
        "model": CHAT_MODEL, "messages": [{"role": "user", "content": long_prompt}]}), 400)
    assert error["code"] == "context_length_exceeded"
    stream = http.post("/v1/chat/completions", json={
        "model": CHAT_MODEL, "stream": True,
        "messages": [{"role": "user", "content": long_prompt}]})
    assert _error(stream, 400)["code"] == "context_length_exceeded"
    error = _error(http.post("/v1/completions", json={
        "model": CHAT_MODEL, "prompt": "hi", "max_tokens": 100_000}), 400)
    assert error["code"] == "context_length_exceeded"


def test_body_over_the_limit_is_413(http: httpx.Client) -> None:
    big = b'{"model": "x", "messages": [{"role": "user", "content": "' + b"a" * (9 << 20) + b'"}]}'
    error = _error(http.post("/v1/chat/completions", content=big,
                             headers={"content-type": "application/json"}), 413)
    assert error["code"] == "payload_too_large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield big[:1000]
        yield big[1000:]

    _error(http.post("/v1/chat/completions", content=chunks()), 413)


def test_unknown_route_and_method_use_the_error_shape(http: httpx.Client) -> None:
    _error(http.get("/v1/nothing-here"), 404)
    _error(http.get("/v1/chat/completions"), 405)


def test_concurrent_clients_are_all_served(client: OpenAI) -> None:
    results: list[str] = []
    errors: list[BaseException] = []

    def ask(i: int) -> None:
        try:
            answer = client.chat.completions.create(
                model=CHAT_MODEL, max_tokens=8,
                messages=[{"role": "user", "content": f"Say the number {i}."}])
            results.append(answer.choices[0].message.content or "")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 6 and all(results)


def test_disconnect_stops_generation(inferd_server: InferdProcess, client: OpenAI) -> None:
    body = {"model": CHAT_MODEL, "max_tokens": 1500, "temperature": 1.0, "stream": True,
            "messages": [{"role": "user", "content": "Write a very long essay about rivers."}]}
    before = _sample(httpx.get(inferd_server.url + "/metrics").text, "inferd_requests_total",
                     endpoint="chat", model=CHAT_MODEL, status="499")
    with httpx.Client(base_url=inferd_server.url, timeout=60) as http, \
            http.stream("POST", "/v1/chat/completions", json=body) as response:
        lines = response.iter_lines()
        for _ in range(4):
            next(lines)
    # The server sees the client leave: the request ends as client-closed (499) and nothing is
    # in flight any more; the engine's cancel flag itself is tested in
    # tests/unit/engines/test_llamacpp.py (no wall-clock bound here: the machine is shared).
    def closed() -> bool:
        metrics = httpx.get(inferd_server.url + "/metrics").text
        return (_sample(metrics, "inferd_requests_total", endpoint="chat", model=CHAT_MODEL,
                        status="499") >= before + 1
                and _sample(metrics, "inferd_requests_in_flight", model=CHAT_MODEL) == 0)

    wait_for(closed, within=120, what="the stream ending as client-closed")
    answer = client.chat.completions.create(model=CHAT_MODEL, messages=HELLO, max_tokens=3)
    assert answer.choices[0].message.content


def _sample(metrics: str, name: str, **labels: str) -> float:
    """The value of one Prometheus sample (0 when it is not exported yet)."""
    wanted = {f'{k}="{v}"' for k, v in labels.items()}
    for line in metrics.splitlines():
        if line.startswith(name + "{"):
            head, _, value = line.rpartition(" ")
            if set(head[len(name) + 1:-1].split(",")) == wanted:
                return float(value)
    return 0.0


@pytest.mark.parametrize(("extra", "param"), [
    ({"top_k": "many"}, "top_k"), ({"min_p": 2}, "min_p"),
    ({"repeat_penalty": 0}, "repeat_penalty"),
    ({"logit_bias": {"99999999": 5}}, "logit_bias"), ({"logit_bias": {"2": 500}}, "logit_bias"),
    # token ids are ASCII digits: not what str.isdigit() or int() also take
    *[({"logit_bias": {key: 5}}, "logit_bias") for key in ("²", "١٢", "+1", " 1", "1_000")],
    ({"max_tokens": 10**30}, "max_tokens"), ({"seed": 10**30}, "seed"),
])
def test_llama_extras_and_numbers_out_of_range_are_400(http: httpx.Client,
                                                      extra: dict[str, Any], param: str) -> None:
    body = {"model": CHAT_MODEL, "messages": HELLO, "max_tokens": 3, **extra}
    assert _error(http.post("/v1/chat/completions", json=body), 400)["param"] == param
