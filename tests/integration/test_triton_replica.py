"""The ``triton`` replica kind against a server that speaks Triton's generate protocol."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import openai
import pytest
import yaml

from inferd.engines.remote import RemoteSpec, UpstreamUnavailable
from inferd.engines.triton import TritonEngine
from inferd.errors import InvalidRequest, UnsupportedParameter, UpstreamError
from inferd.routing.replica import Replica
from inferd.routing.router import Router
from inferd.schemas.openai import ChatCompletionRequest, CompletionRequest
from tests.fake_triton import FakeTriton
from tests.helpers import InferdProcess, free_port


@pytest.fixture
async def triton() -> AsyncIterator[tuple[FakeTriton, TritonEngine]]:
    fake = FakeTriton("vllm_model")
    async with fake as url:
        engine = TritonEngine("llama", RemoteSpec(url=url, upstream_model="vllm_model"))
        await engine.start()
        try:
            yield fake, engine
        finally:
            await engine.close()


def chat(text: str, **fields: object) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "llama", "messages": [{"role": "system", "content": "Be brief."},
                                        {"role": "user", "content": text}], **fields})


async def test_chat_renders_the_template_and_maps_the_answer(
        triton: tuple[FakeTriton, TritonEngine]) -> None:
    fake, engine = triton
    result = (await engine.chat(chat("one two three four", max_tokens=3, temperature=0.0))).wire()
    assert result["object"] == "chat.completion"
    assert result["model"] == "llama"
    assert result["choices"][0]["message"]["content"] == "one two three"
    assert result["choices"][0]["finish_reason"] == "length"
    assert result["usage"]["completion_tokens"] == 3
    assert result["usage"]["prompt_tokens"] > 4
    sent = fake.requests[-1]
    assert sent["text_input"].startswith("<|im_start|>system\nBe brief.<|im_end|>")
    assert sent["text_input"].endswith("<|im_start|>assistant\n")
    assert sent["exclude_input_in_output"] is True and sent["stream"] is False
    # a default stop string plus none of the client's: one stop, sent as a scalar parameter
    assert sent["parameters"] == {"temperature": 0.0, "max_tokens": 3, "stop": "<|im_end|>"}


async def test_several_stop_strings_travel_as_sampling_parameters(
        triton: tuple[FakeTriton, TritonEngine]) -> None:
    fake, engine = triton
    result = (await engine.chat(chat("alpha beta STOP gamma", stop=["STOP"]))).wire()
    assert result["choices"][0]["message"]["content"] == "alpha beta"
    sent = fake.requests[-1]
    assert "parameters" not in sent
    assert json.loads(sent["sampling_parameters"])["stop"] == ["STOP", "<|im_end|>"]


async def test_chat_stream_yields_deltas_then_finish_and_usage(
        triton: tuple[FakeTriton, TritonEngine]) -> None:
    _, engine = triton
    chunks = [c async for c in engine.chat_stream(chat("red green blue"))]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "red green blue"
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == 3


async def test_text_completion_and_its_stream(triton: tuple[FakeTriton, TritonEngine]) -> None:
    _, engine = triton
    request = CompletionRequest.model_validate({"model": "llama", "prompt": ["a b", "c d e"]})
    result = (await engine.complete(request)).wire()
    assert [c["text"] for c in result["choices"]] == ["a b", "c d e"]
    assert result["usage"]["completion_tokens"] == 5
    stream_request = CompletionRequest.model_validate({"model": "llama", "prompt": "x y z",
                                                       "stream": True})
    chunks = [c async for c in engine.complete_stream(stream_request)]
    assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == "x y z"
    assert chunks[-1]["usage"]["total_tokens"] > 3


async def test_health_probe(triton: tuple[FakeTriton, TritonEngine]) -> None:
    _, engine = triton
    await engine.probe()  # GET /v2/health/ready answers 200
    gone = TritonEngine("llama", RemoteSpec(url=f"http://127.0.0.1:{free_port()}",
                                            upstream_model="vllm_model"))
    await gone.start()
    try:
        with pytest.raises(UpstreamUnavailable):
            await gone.probe()
    finally:
        await gone.close()


async def test_errors_before_and_during_the_stream() -> None:
    fake = FakeTriton("vllm_model", fail_after=2)
    async with fake as url:
        wrong = TritonEngine("llama", RemoteSpec(url=url, upstream_model="other"))
        engine = TritonEngine("llama", RemoteSpec(url=url, upstream_model="vllm_model"))
        await wrong.start()
        await engine.start()
        try:
            with pytest.raises(InvalidRequest, match="unknown model"):
                await wrong.chat(chat("hi"))
            stream = engine.chat_stream(chat("one two three four"))
            got = [await anext(stream), await anext(stream)]
            assert got[1]["choices"][0]["delta"]["content"] == " two"
            with pytest.raises(UpstreamError, match="engine died"):
                await anext(stream)
            with pytest.raises(UnsupportedParameter):
                await engine.chat(chat("hi", n=2))
        finally:
            await wrong.close()
            await engine.close()


async def test_a_dead_triton_is_retried_elsewhere_and_cooled_down() -> None:
    fake = FakeTriton("vllm_model")
    async with fake as url:
        dead = TritonEngine("llama", RemoteSpec(url="http://127.0.0.1:9", upstream_model="m"))
        live = TritonEngine("llama", RemoteSpec(url=url, upstream_model="vllm_model"))
        router = Router()
        for engine, rid in ((dead, "dead"), (live, "live")):
            await engine.start()
            router.add(Replica(id=rid, model="llama", engine=engine, kind="triton"))
        try:
            for _ in range(3):
                result = (await router.chat(chat("still here"))).wire()
                assert result["choices"][0]["message"]["content"] == "still here"
            down = router.replica("dead")
            assert down is not None and not down.healthy
            assert down.last_error is not None and "could not be reached" in down.last_error
            with pytest.raises(UpstreamUnavailable):
                await dead.probe()
        finally:
            await dead.close()
            await live.close()


async def _gateway_to(tmp_path: Path, url: str) -> InferdProcess:
    """A running gateway serving the Triton server at ``url`` as model ``tri`` (auth off)."""
    config = tmp_path / "gw.yaml"
    config.write_text(yaml.safe_dump({"bundled_models": False, "remote_models": [
        {"name": "tri", "replicas": [{"kind": "triton", "url": url,
                                      "upstream_model": "vllm_model"}]}]}))
    gw = InferdProcess(tmp_path / "gw", "--config", str(config), "--no-bundled",
                       env={"INFERD_AUTH": "off"})
    await asyncio.to_thread(gw.start)
    return gw


async def test_triton_replica_through_a_running_gateway(tmp_path: Path) -> None:
    fake = FakeTriton("vllm_model")
    async with fake as url:
        gw = await _gateway_to(tmp_path, url)
        try:
            api = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0)
            answer = await api.chat.completions.create(
                model="tri", messages=[{"role": "user", "content": "through the gateway"}])
            assert answer.choices[0].message.content == "through the gateway"
            assert answer.usage is not None and answer.usage.completion_tokens == 3
            stream = await api.chat.completions.create(
                model="tri", stream=True, stream_options={"include_usage": True},
                messages=[{"role": "user", "content": "streamed words"}])
            chunks = [c async for c in stream]
            assert "".join(c.choices[0].delta.content or "" for c in chunks
                           if c.choices) == "streamed words"
            assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 2
            async with httpx.AsyncClient() as http:
                state = (await http.get(gw.url + "/admin/v1/replicas")).json()["data"][0]
            assert state["kind"] == "triton" and state["healthy"] is True
        finally:
            await asyncio.to_thread(gw.stop)


WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


@pytest.fixture
async def calling() -> AsyncIterator[tuple[FakeTriton, TritonEngine]]:
    """A Triton whose model answers with a call in the Hermes format."""
    fake = FakeTriton("vllm_model", reply=CALL)
    async with fake as url:
        engine = TritonEngine("llama", RemoteSpec(url=url, upstream_model="vllm_model"))
        await engine.start()
        try:
            yield fake, engine
        finally:
            await engine.close()


async def test_tools_are_rendered_and_calls_parsed_back(
        calling: tuple[FakeTriton, TritonEngine]) -> None:
    fake, engine = calling
    result = (await engine.chat(chat("Weather in Paris?", tools=[WEATHER]))).wire()
    choice = result["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    [call] = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}
    # ChatML renders no tools itself: they are described in the (first) system message
    text = fake.requests[-1]["text_input"]
    assert text.startswith("<|im_start|>system\nBe brief.\n\nYou are a function calling")
    assert '"name": "get_weather"' in text
    # tool_choice none: no tools in the prompt, the answer stays text
    plain = (await engine.chat(chat("Weather in Paris?", tools=[WEATHER],
                                    tool_choice="none"))).wire()
    assert plain["choices"][0]["message"]["content"] == CALL
    assert "get_weather" not in fake.requests[-1]["text_input"]


async def test_streamed_tool_calls_arrive_as_deltas(
        calling: tuple[FakeTriton, TritonEngine]) -> None:
    _, engine = calling
    chunks = [c async for c in engine.chat_stream(chat("Weather?", tools=[WEATHER],
                                                       tool_choice="required"))]
    deltas = [d for c in chunks if c["choices"]
              for d in c["choices"][0]["delta"].get("tool_calls") or []]
    assert deltas[0]["function"]["name"] == "get_weather" and deltas[0]["id"]
    arguments = "".join(d["function"].get("arguments", "") for d in deltas)
    assert json.loads(arguments) == {"city": "Paris"}
    assert {d["index"] for d in deltas} == {0}
    assert not "".join(c["choices"][0]["delta"].get("content") or ""
                       for c in chunks if c["choices"])
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"


async def test_tool_results_go_back_into_the_prompt_and_templates_render_tools() -> None:
    template = ("{% if tools %}TOOLS:{% for t in tools %}{{ t.function.name }};{% endfor %}\n"
                "{% endif %}{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"
                "assistant:")
    fake = FakeTriton("vllm_model", reply="It is sunny.")
    async with fake as url:
        engine = TritonEngine("llama", RemoteSpec(url=url, upstream_model="vllm_model",
                                                  options={"chat_template": template}))
        await engine.start()
        try:
            result = (await engine.chat(ChatCompletionRequest.model_validate({
                "model": "llama", "tools": [WEATHER], "messages": [
                    {"role": "user", "content": "Weather in Paris?"},
                    {"role": "assistant", "content": None, "tool_calls": [
                        {"id": "call_1", "type": "function", "function": {
                            "name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
                    {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 24 C"}]}))).wire()
        finally:
            await engine.close()
    assert result["choices"][0]["message"]["content"] == "It is sunny."
    assert "tool_calls" not in result["choices"][0]["message"]
    text = fake.requests[-1]["text_input"]
    assert text.startswith("TOOLS:get_weather;\n")  # the template's own rendering
    assert "You are a function calling" not in text
    assert 'assistant: <tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}' \
        in text
    assert "tool: sunny, 24 C" in text


async def test_image_parts_are_refused_naming_the_part(
        triton: tuple[FakeTriton, TritonEngine]) -> None:
    fake, engine = triton
    sent = len(fake.requests)
    with pytest.raises(UnsupportedParameter) as refused:
        await engine.chat(ChatCompletionRequest.model_validate({
            "model": "llama", "messages": [{"role": "user", "content": [
                {"type": "text", "text": "What is in it?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K"}}]}]}))
    assert refused.value.param == "messages[0].content[1]"
    assert "image" in str(refused.value)
    assert len(fake.requests) == sent  # refused before anything was sent


async def test_tool_calls_of_a_triton_replica_through_the_gateway(tmp_path: Path) -> None:
    fake = FakeTriton("vllm_model", reply=CALL)
    async with fake as url:
        gw = await _gateway_to(tmp_path, url)
        try:
            api = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0)
            ask = [{"role": "user", "content": "Weather in Paris?"}]
            answer = await api.chat.completions.create(
                model="tri", messages=ask, tools=[WEATHER])  # type: ignore[arg-type,list-item]
            [call] = answer.choices[0].message.tool_calls or []
            assert answer.choices[0].finish_reason == "tool_calls"
            assert call.function.name == "get_weather"  # type: ignore[union-attr]
            async with api.chat.completions.stream(
                    model="tri", messages=ask, tools=[WEATHER]) as stream:  # type: ignore[arg-type,list-item]
                final = await stream.get_final_completion()
            [streamed] = final.choices[0].message.tool_calls or []
            assert json.loads(streamed.function.arguments) == {"city": "Paris"}  # type: ignore[union-attr]
            assert final.choices[0].finish_reason == "tool_calls"
        finally:
            await asyncio.to_thread(gw.stop)
