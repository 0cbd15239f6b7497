"""A real OTLP/HTTP trace receiver for the tests: an HTTP server on loopback, in the test
process, that decodes each ``POST /v1/traces`` body (a protobuf ``ExportTraceServiceRequest``,
with ``opentelemetry-proto``, gzip when the exporter compresses) into ``Received`` spans."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.helpers import wait_for

KINDS = {Span.SPAN_KIND_INTERNAL: "internal", Span.SPAN_KIND_SERVER: "server",
         Span.SPAN_KIND_CLIENT: "client", Span.SPAN_KIND_PRODUCER: "producer",
         Span.SPAN_KIND_CONSUMER: "consumer", Span.SPAN_KIND_UNSPECIFIED: "unspecified"}


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    return None if kind is None else getattr(value, kind)


@dataclass
class Received:
    """One exported span, as the receiver decoded it."""

    name: str
    trace_id: str
    span_id: str
    parent_id: str  # "" for a root span
    kind: str
    attributes: dict[str, Any]
    events: list[str]
    status: int  # 0 unset, 1 ok, 2 error
    resource: dict[str, Any] = field(default_factory=dict)

    @property
    def service(self) -> str:
        return str(self.resource.get("service.name"))


class OtlpReceiver:
    """Collects the spans exporters send to ``endpoint``."""

    def __init__(self) -> None:
        self.spans: list[Received] = []
        self.requests = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces":
                    self.send_response(404)
                    self.end_headers()
                    return
                receiver._take(ExportTraceServiceRequest.FromString(body))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def env(self, service: str) -> dict[str, str]:
        """What a process needs to export here as ``service``, in batches sent soon."""
        return {"OTEL_EXPORTER_OTLP_ENDPOINT": self.endpoint, "OTEL_SERVICE_NAME": service,
                "OTEL_BSP_SCHEDULE_DELAY": "100"}

    def _take(self, request: ExportTraceServiceRequest) -> None:
        spans = []
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    spans.append(Received(
                        name=span.name, trace_id=span.trace_id.hex(), span_id=span.span_id.hex(),
                        parent_id=span.parent_span_id.hex(), kind=KINDS[span.kind],
                        attributes={a.key: _value(a.value) for a in span.attributes},
                        events=[e.name for e in span.events], status=span.status.code,
                        resource=resource))
        with self._lock:
            self.requests += 1
            self.spans += spans

    def of(self, service: str) -> list[Received]:
        with self._lock:
            return [s for s in self.spans if s.service == service]

    def wait(self, found: Callable[[list[Received]], bool], service: str,
             within: float = 60.0) -> list[Received]:
        """The spans of ``service`` once ``found`` holds for them."""
        wait_for(lambda: found(self.of(service)), within=within,
                 what=f"spans of {service}")
        return self.of(service)

    def start(self) -> OtlpReceiver:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def otlp_receiver() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver().start()
    try:
        yield receiver
    finally:
        receiver.stop()


def named(spans: list[Received], name: str) -> list[Received]:
    return [s for s in spans if s.name == name]


def one(spans: list[Received], name: str, **attributes: Any) -> Received:
    """The one span called ``name`` whose attributes include ``attributes``."""
    found = [s for s in named(spans, name)
             if all(s.attributes.get(k) == v for k, v in attributes.items())]
    assert len(found) == 1, (name, attributes, [(s.name, s.attributes) for s in spans])
    return found[0]


def children(spans: list[Received], parent: Received) -> list[Received]:
    return [s for s in spans if s.parent_id == parent.span_id and s.trace_id == parent.trace_id]
