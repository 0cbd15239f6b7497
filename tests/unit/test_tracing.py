"""``inferd.tracing``: when tracing is on, what refuses it, W3C propagation in and out."""

from __future__ import annotations

import pytest
from opentelemetry.context import attach, detach
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import get_current_span

from inferd import tracing

ENDPOINT = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{TRACE_ID}-b7ad6b7169203331-01"


@pytest.mark.parametrize(("environ", "on"), [
    ({}, False),
    ({"OTEL_SERVICE_NAME": "inferd", "OTEL_TRACES_SAMPLER": "always_on"}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": " "}, False),
    (ENDPOINT, True),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, True),
    ({**ENDPOINT, "OTEL_SDK_DISABLED": "true"}, False),
    ({**ENDPOINT, "OTEL_SDK_DISABLED": "false"}, True),
    ({**ENDPOINT, "OTEL_TRACES_EXPORTER": "none"}, False),
    ({**ENDPOINT, "OTEL_TRACES_EXPORTER": "otlp"}, True),
])
def test_tracing_is_on_only_with_an_otlp_endpoint(environ: dict[str, str], on: bool) -> None:
    assert tracing.configured(environ) is on
    if not on:
        assert tracing.start_tracing("serve", environ) is None


def test_a_transport_other_than_otlp_http_is_refused() -> None:
    assert tracing.refusal(ENDPOINT) is None
    assert tracing.refusal({}) is None
    assert tracing.refusal({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}) is None  # off anyway
    why = tracing.refusal({**ENDPOINT, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
    assert why is not None and "OTEL_EXPORTER_OTLP_PROTOCOL=grpc" in why
    # the traces' own variable wins over the general one
    assert tracing.refusal({**ENDPOINT, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"}) is None
    why = tracing.refusal({**ENDPOINT, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"})
    assert why is not None and "http/json" in why


def test_traceparent_in_and_out() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    assert tracing.outgoing() == {} and tracing.current_tracer() is None  # nothing traced
    parent = tracing.incoming([(b"host", b"x"), (b"traceparent", TRACEPARENT.encode())])
    span = tracer.start_span("request", context=parent)
    token = attach(tracing.with_tracer(tracer, span))
    try:
        assert tracing.current_tracer() is tracer
        sent = tracing.outgoing()["traceparent"]
        assert tracing.current_traceparent() == sent
    finally:
        detach(token)
    span.end()
    ids = span.get_span_context()
    assert sent == f"00-{TRACE_ID}-{ids.span_id:016x}-01"
    assert (exporter.get_finished_spans()[0].parent.span_id  # type: ignore[union-attr]
            == 0xb7ad6b7169203331)
    assert tracing.carried(None) is None
    for stored in (tracing.carried(sent), tracing.received({"traceparent": sent})):
        assert stored is not None
        carried = get_current_span(stored).get_span_context()
        assert (carried.trace_id, carried.span_id) == (ids.trace_id, ids.span_id)
