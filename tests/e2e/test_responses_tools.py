"""Function tools through the Responses API, on an ``http`` replica that supports tool calls:
llama-cpp-python's own OpenAI server with its function-calling chat format, running the
bundled model."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import yaml

from inferd.settings import bundled_gguf_path
from tests.helpers import InferdProcess, free_port

WEATHER = {"type": "function", "name": "get_weather", "description": "The weather in a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                          "required": ["city"]}}


def _wait_listening(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            httpx.get(url + "/v1/models", timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise AssertionError("llama_cpp.server did not start")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InferdProcess]:
    tmp = Path(tmp_path_factory.mktemp("tools"))
    port = free_port()
    with (tmp / "llama.log").open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model",
                                 bundled_gguf_path(), "--host", "127.0.0.1", "--port",
                                 str(port), "--n_ctx", "2048", "--model_alias", "smollm2",
                                 "--chat_format", "chatml-function-calling",
                                 "--interrupt_requests", "False"],
                                stdout=log, stderr=subprocess.STDOUT)
    upstream = f"http://127.0.0.1:{port}"
    try:
        _wait_listening(upstream, proc)
        config = tmp / "gateway.yaml"
        config.write_text(yaml.safe_dump({"remote_models": [{"name": "tooly", "replicas": [
            {"kind": "http", "url": upstream + "/v1", "upstream_model": "smollm2"}]}]}))
        # One health check, at the start: llama_cpp.server answers one request at a time, its
        # /v1/models behind a generation, which on a busy machine outlasts a check's 5 s and
        # would take the replica out of routing between two tests' requests.
        with InferdProcess(tmp / "gw", "--config", str(config), "--no-bundled",
                           env={"INFERD_AUTH": "off",
                                "INFERD_HEALTH_CHECK_INTERVAL": "3600"}) as gw:
            yield gw
    finally:
        proc.terminate()
        proc.wait(15)


def sdk(server: InferdProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0,
                         timeout=120)


def test_function_call_then_its_output(gateway: InferdProcess) -> None:
    client = sdk(gateway)
    first = client.responses.create(
        model="tooly", input="What is the weather in Paris?", tools=[WEATHER],  # type: ignore[list-item]
        tool_choice={"type": "function", "name": "get_weather"}, max_output_tokens=64,
        temperature=0)
    calls = [item for item in first.output if item.type == "function_call"]
    assert calls, first.output
    call = calls[0]
    assert call.name == "get_weather" and "city" in json.loads(call.arguments)
    follow = client.responses.create(
        model="tooly", previous_response_id=first.id, max_output_tokens=24, temperature=0,
        input=[{"type": "function_call_output", "call_id": call.call_id,
                "output": "Sunny, 24 C"}])
    assert follow.status in ("completed", "incomplete") and follow.output_text


def test_streamed_function_call_arguments(gateway: InferdProcess) -> None:
    client = sdk(gateway)
    with client.responses.stream(
            model="tooly", input="Weather in Rome?", tools=[WEATHER],  # type: ignore[list-item]
            tool_choice={"type": "function", "name": "get_weather"}, max_output_tokens=64,
            temperature=0) as stream:
        events = list(stream)
    types = [e.type for e in events]
    assert "response.function_call_arguments.delta" in types
    done = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert done and "city" in json.loads(done[0].arguments)
    deltas = "".join(e.delta for e in events  # type: ignore[union-attr]
                     if e.type == "response.function_call_arguments.delta")
    assert deltas == done[0].arguments
