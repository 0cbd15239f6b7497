"""OpenTelemetry traces of ``inferd serve`` processes, exported over OTLP/HTTP to a real
receiver in the test process (``tests.otlp_receiver``): the spans of a chat request (fast path)
and of a framework route, their parent/child links and GenAI attributes, an incoming
``traceparent`` honoured, one sent on to an ``http`` replica (another traced inferd), and
nothing exported when tracing is off."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.fault_upstream import FaultUpstream
from tests.helpers import ROOT, InferdProcess
from tests.otlp_receiver import OtlpReceiver, Received, children, named, one, otlp_receiver

NO_AUTH = {"INFERD_AUTH": "off"}
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{CALLER_SPAN}-01"
CHAT = "POST /v1/chat/completions"


def echo_server(tmp: Path, name: str, env: dict[str, str], **config: Any) -> InferdProcess:
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"bundled_models": False, "models": [
        {"name": "echo", "kind": "echo"}], **config}))
    return InferdProcess(tmp / name, "--config", str(path), "--no-bundled",
                         env={**NO_AUTH, **env})


@pytest.fixture
def receiver() -> Any:
    with otlp_receiver() as r:
        yield r


def chat(server: InferdProcess, text: str, model: str = "echo", stream: bool = False,
         headers: dict[str, str] | None = None) -> httpx.Response:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": text}]}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    response = httpx.post(server.url + "/v1/chat/completions", json=body,
                          headers=headers or {}, timeout=60)
    assert response.status_code == 200, response.text
    return response


def the_request(spans: list[Received], trace_id: str) -> dict[str, Received]:
    """A chat request's spans by role, each checked to be the child of the one above it."""
    server = one([s for s in spans if s.trace_id == trace_id], CHAT)
    assert server.kind == "server"
    kids = children(spans, server)
    assert len(kids) == 1, [(k.name, k.attributes) for k in kids]
    (inference,) = kids
    (route,) = children(spans, inference)
    (attempt,) = children(spans, route)
    (generate,) = children(spans, attempt)
    return {"server": server, "inference": inference, "route": route, "attempt": attempt,
            "generate": generate}


def done(trace_id: str) -> Any:
    """Whether the request of ``trace_id`` has all its spans (the server's ends last)."""
    return lambda spans: any(s.name == CHAT and s.trace_id == trace_id for s in spans)


def test_a_chat_request_is_one_trace_under_the_callers_span(
        tmp_path: Path, receiver: OtlpReceiver) -> None:
    with echo_server(tmp_path, "serve", receiver.env("inferd-serve")) as server:
        answer = chat(server, "one two three", headers={"traceparent": TRACEPARENT}).json()
        spans = receiver.wait(done(TRACE_ID), "inferd-serve")
        request = the_request(spans, TRACE_ID)
    server_span = request["server"]
    assert server_span.parent_id == CALLER_SPAN  # the caller's traceparent is honoured
    assert server_span.attributes["http.route"] == "/v1/chat/completions"
    assert server_span.attributes["http.response.status_code"] == 200
    assert server_span.attributes["http.request.method"] == "POST"
    assert server_span.attributes["inferd.request_id"]
    assert server_span.resource["inferd.role"] == "serve"

    inference = request["inference"]
    assert inference.name == "chat echo" and inference.kind == "internal"
    assert inference.attributes | {
        "gen_ai.system": "inferd", "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "echo", "gen_ai.response.model": "echo",
        "gen_ai.usage.input_tokens": answer["usage"]["prompt_tokens"],
        "gen_ai.usage.output_tokens": answer["usage"]["completion_tokens"],
        "gen_ai.response.finish_reasons": ["stop"], "inferd.replica.id": "local:echo",
        "inferd.stream": False} == inference.attributes
    assert answer["usage"]["completion_tokens"] == 3

    route = request["route"]
    assert route.name == "route echo"
    assert route.attributes["inferd.routing"] and route.attributes["inferd.route.attempts"] == 1
    assert route.attributes["inferd.replica.id"] == "local:echo"

    attempt = request["attempt"]
    assert attempt.name == "chat echo" and attempt.kind == "client"
    assert attempt.attributes | {
        "gen_ai.system": "echo", "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "echo", "inferd.replica.id": "local:echo",
        "inferd.attempt": 1, "inferd.attempt.outcome": "ok",
        "gen_ai.usage.output_tokens": 3} == attempt.attributes

    generate = request["generate"]
    assert generate.name == "generate echo"
    assert generate.attributes["gen_ai.usage.output_tokens"] == 3
    assert generate.attributes["gen_ai.response.finish_reasons"] == ["stop"]


def test_a_stream_is_traced_to_its_end_and_a_request_without_a_caller_starts_a_trace(
        tmp_path: Path, receiver: OtlpReceiver) -> None:
    with echo_server(tmp_path, "serve", receiver.env("inferd-serve")) as server:
        chat(server, "four five", stream=True)
        # a framework route (not a fast path) is traced by the same middleware
        assert httpx.get(server.url + "/v1/models", timeout=30).status_code == 200
        spans = receiver.wait(lambda s: bool(named(s, CHAT) and named(s, "GET /v1/models")),
                              "inferd-serve")
        (server_span,) = named(spans, CHAT)
        # the request log names the trace the request started (no traceparent came with it)
        logged = httpx.get(server.url + "/admin/v1/requests", params={"model": "echo"},
                           timeout=30).json()["data"]
        assert [r["trace_id"] for r in logged] == [server_span.trace_id]
    assert server_span.parent_id == ""  # no traceparent: a new trace
    request = the_request(spans, server_span.trace_id)
    inference = request["inference"]
    assert inference.attributes["inferd.stream"] is True
    assert inference.attributes["gen_ai.usage.output_tokens"] == 2
    assert inference.attributes["gen_ai.response.finish_reasons"] == ["stop"]
    assert request["attempt"].attributes["inferd.attempt.outcome"] == "ok"
    assert request["generate"].events == ["first_token"]
    (models,) = named(spans, "GET /v1/models")
    assert models.kind == "server" and models.attributes["http.route"] == "/v1/models"
    assert not named(spans, "GET /ready")  # the probes (the test's own, polled) are not traced


def test_an_http_replica_gets_the_traceparent_of_its_attempt(
        tmp_path: Path, receiver: OtlpReceiver) -> None:
    upstream = echo_server(tmp_path, "upstream", receiver.env("upstream")).start()
    try:
        config = tmp_path / "gateway.yaml"
        config.write_text(yaml.safe_dump({"bundled_models": False, "remote_models": [
            {"name": "chat", "replicas": [{"kind": "http", "url": upstream.url,
                                           "upstream_model": "echo"}]}]}))
        gateway = InferdProcess(tmp_path / "gw", "--config", str(config), "--no-bundled",
                                env={**NO_AUTH, **receiver.env("gateway")})
        with gateway:
            for stream in (False, True):  # the lean pool and the streaming client
                chat(gateway, "six seven", model="chat", stream=stream,
                     headers={"traceparent": TRACEPARENT})
            gateway_spans = receiver.wait(lambda s: len(named(s, CHAT)) == 2, "gateway")
            upstream_spans = receiver.wait(lambda s: len(named(s, CHAT)) == 2, "upstream")
    finally:
        upstream.stop()
    attempts = [s for s in gateway_spans if s.name == "chat chat" and s.kind == "client"]
    assert len(attempts) == 2
    for attempt in attempts:
        assert attempt.trace_id == TRACE_ID
        assert attempt.attributes["gen_ai.system"] == "http"
        assert attempt.attributes["inferd.attempt.outcome"] == "ok"
        # the upstream's server span is the child of the gateway's attempt
        (downstream,) = [s for s in upstream_spans if s.parent_id == attempt.span_id]
        assert downstream.name == CHAT and downstream.trace_id == TRACE_ID
        (upstream_inference,) = children(upstream_spans, downstream)
        assert upstream_inference.attributes["gen_ai.request.model"] == "echo"


@pytest.mark.parametrize("off", [{"OTEL_SDK_DISABLED": "true"},
                                 {"OTEL_TRACES_EXPORTER": "none"}])
def test_nothing_is_exported_when_tracing_is_off(
        tmp_path: Path, receiver: OtlpReceiver, off: dict[str, str]) -> None:
    # the endpoint is set and reachable: only the switch keeps the spans home
    with echo_server(tmp_path, "off", {**receiver.env("off"), **off}) as server:
        chat(server, "eight", headers={"traceparent": TRACEPARENT})
        chat(server, "nine", stream=True)
    # stopped: a tracing process sends what it buffered before it exits
    assert receiver.requests == 0 and receiver.spans == []


def test_a_transport_inferd_cannot_send_stops_it_at_start(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "inferd", "serve", "--no-bundled", "--data-dir",
         str(tmp_path / "data")], cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src"),
             "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317",
             "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: OTEL_EXPORTER_OTLP_PROTOCOL=grpc is not supported")
    assert "Traceback" not in done.stdout + done.stderr


def test_a_trace_the_caller_did_not_sample_is_not_recorded_here_nor_upstream(
        tmp_path: Path, receiver: OtlpReceiver) -> None:
    dropped = "11111111111111111111111111111111"
    upstream = echo_server(tmp_path, "upstream", receiver.env("upstream")).start()
    try:
        config = tmp_path / "gateway.yaml"
        config.write_text(yaml.safe_dump({"bundled_models": False, "remote_models": [
            {"name": "chat", "replicas": [{"kind": "http", "url": upstream.url,
                                           "upstream_model": "echo"}]}]}))
        gateway = InferdProcess(tmp_path / "gw", "--config", str(config), "--no-bundled",
                                env={**NO_AUTH, **receiver.env("gateway")})
        with gateway:  # parent-based sampling (the SDK's default): the caller's flag decides
            chat(gateway, "not sampled", model="chat",
                 headers={"traceparent": f"00-{dropped}-{CALLER_SPAN}-00"})
            chat(gateway, "sampled", model="chat", headers={"traceparent": TRACEPARENT})
    finally:
        upstream.stop()
    # both stopped: each sent every span it recorded before it exited
    spans = receiver.of("gateway") + receiver.of("upstream")
    assert {s.trace_id for s in spans if s.name == CHAT} == {TRACE_ID}
    assert dropped not in {s.trace_id for s in spans}
    assert len(receiver.of("upstream")) >= 4  # the sampled request's spans did arrive


def test_an_attempt_on_a_failing_replica_and_the_fallback_that_answers(
        tmp_path: Path, receiver: OtlpReceiver) -> None:
    with FaultUpstream() as upstream, echo_server(
            tmp_path, "serve", receiver.env("inferd-serve"), remote_models=[
                {"name": "chat", "fallbacks": ["echo"], "replicas": [  # 200, not JSON
                    {"kind": "http", "url": upstream.url("garbage"), "upstream_model": "echo"}]}]
            ) as server:
        answer = chat(server, "falls back", model="chat", headers={"traceparent": TRACEPARENT})
        assert answer.json()["model"] == "echo"
        spans = receiver.wait(done(TRACE_ID), "inferd-serve")
    server_span = one([s for s in spans if s.trace_id == TRACE_ID], CHAT)
    (inference,) = children(spans, server_span)
    assert inference.attributes["gen_ai.request.model"] == "chat"
    assert inference.attributes["gen_ai.response.model"] == "echo"
    (route,) = children(spans, inference)
    assert route.attributes["inferd.route.attempts"] == 2
    assert route.attributes["inferd.replica.id"] == "local:echo"
    first, second = sorted(children(spans, route), key=lambda s: s.attributes["inferd.attempt"])
    assert first.name == "chat chat" and first.attributes["inferd.attempt"] == 1
    assert first.attributes["inferd.attempt.outcome"] == "unavailable"
    assert first.status == 2 and first.attributes["error.type"]  # failed, with its error
    assert "exception" in first.events
    assert second.name == "chat echo" and second.attributes["inferd.attempt"] == 2
    assert second.attributes["inferd.attempt.outcome"] == "ok"
