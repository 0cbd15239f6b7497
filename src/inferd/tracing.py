"""OpenTelemetry traces: on when an OTLP endpoint is configured, nothing at all otherwise.

``start_tracing`` is called once by the app factory (``inferd.app.create_app``). Without
``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (or with
``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none``) it returns None: the SDK is not
imported, and each place that would trace checks for a tracer it was not given (one ``is None``
per request). With one, it builds an SDK tracer provider that exports spans in batches over
OTLP/HTTP (protobuf); the SDK reads the standard variables itself: ``OTEL_SERVICE_NAME`` and
``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_EXPORTER_OTLP_*`` (endpoint, headers, timeout, compression,
certificates), ``OTEL_TRACES_SAMPLER`` and its argument, ``OTEL_BSP_*``, ``OTEL_PROPAGATORS``.

The provider is this process's own (handed to what traces, never installed as the global one).
The spans it makes (docs/operating/tracing.md):

- ``{METHOD} {route}``, kind server: every HTTP request (``inferd.http.tracing``), the child of
  an incoming W3C ``traceparent``;
- ``{operation} {model}``: one request through limits, router and engine, with the GenAI
  attributes (``inferd.inference``);
- ``route {model}``: the router choosing replicas (``inferd.routing.router``), and under it one
  ``{operation} {model}`` span of kind client per attempt on a replica: its id, the attempt's
  number and outcome; an ``http`` replica's request carries ``traceparent``;
- ``generate {model}``: a local text engine's run of a prompt, with an event when its first
  token came (``inferd.engines.local``);
- ``answer {model}``, kind server: a worker answering a request a gateway sent it over
  RabbitMQ (``inferd.engines.queue``: the message's headers carry ``traceparent``);
- ``job {endpoint}``, kind consumer: a worker running a job, in the trace of the request that
  submitted it (its ``traceparent`` is stored with the job).

Under a span the sampler did not record nothing makes a span (``with_tracer``).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from opentelemetry import context, propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer

from inferd import __version__

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
# The only transport shipped (``inferd[tracing]``): OTLP over HTTP with protobuf bodies.
PROTOCOL = "http/protobuf"
PROTOCOL_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
SDK_MODULES = ("opentelemetry.sdk", "opentelemetry.exporter.otlp.proto.http")
INSTALL = "pip install 'inferd[tracing]'"
# What the spans of a request that gets an answer from inferd say it is (``gen_ai.system``).
SYSTEM = "inferd"
# Where a job keeps the trace of the request that submitted it (``JobRecord.meta``).
TRACEPARENT: Final = "traceparent"
# The current OpenTelemetry context holds the tracer while a request is traced, so that the
# engines below the router (built without one) trace their work only then.
_TRACER_KEY = context.create_key("inferd-tracer")

__all__ = ["Span", "SpanKind", "Status", "StatusCode", "Tracer", "Tracing"]


def configured(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the environment asks for traces: an OTLP endpoint is set and neither
    ``OTEL_SDK_DISABLED`` nor ``OTEL_TRACES_EXPORTER=none`` turns them off."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return False
    return any(environ.get(name, "").strip() for name in ENDPOINT_VARIABLES)


def refusal(environ: Mapping[str, str] = os.environ) -> str | None:
    """Why the configured tracing cannot run (one line to act on), or None."""
    if not configured(environ):
        return None
    if not all(_found(m) for m in SDK_MODULES):
        return (f"{next(n for n in ENDPOINT_VARIABLES if environ.get(n, '').strip())} is set "
                f"but the OpenTelemetry SDK is not installed: {INSTALL}")
    for name in PROTOCOL_VARIABLES:
        protocol = environ.get(name, "").strip().lower()
        if protocol and protocol != PROTOCOL:
            return (f"{name}={protocol} is not supported: inferd exports traces over "
                    f"OTLP/HTTP ({PROTOCOL}); point the endpoint at the collector's HTTP port "
                    "(4318) and unset the variable or set it to http/protobuf")
        if protocol:
            break
    return None


def _found(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


@dataclass(frozen=True)
class Tracing:
    """The process's tracer and how to flush and stop its exporter."""

    tracer: Tracer
    shutdown: Callable[[], None]


def start_tracing(role: str, environ: Mapping[str, str] = os.environ) -> Tracing | None:
    """The SDK tracer of this process (``role``: serve, gateway, worker, engine) exporting
    over OTLP/HTTP, or None when tracing is not configured (see the module docstring)."""
    if not configured(environ):
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win; "inferd" when neither names one
    resource = Resource.create({"service.version": __version__, "inferd.role": role})
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "inferd"}))
    provider = TracerProvider(resource=resource)  # the sampler from OTEL_TRACES_SAMPLER
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return Tracing(tracer=provider.get_tracer("inferd", __version__),
                   shutdown=provider.shutdown)


# -- propagation --------------------------------------------------------------------------------
@dataclass(frozen=True)
class _HeaderList:
    """Reads W3C trace headers from ASGI's ``[(name, value), ...]`` (lower-case bytes)."""

    def get(self, carrier: Iterable[tuple[bytes, bytes]], key: str) -> list[str] | None:
        wanted = key.lower().encode("latin-1")
        values = [v.decode("latin-1") for k, v in carrier if k == wanted]
        return values or None

    def keys(self, carrier: Iterable[tuple[bytes, bytes]]) -> list[str]:
        return [k.decode("latin-1") for k, _ in carrier]


_HEADER_LIST = _HeaderList()


def incoming(headers: Iterable[tuple[bytes, bytes]]) -> context.Context:
    """The context an HTTP request's ``traceparent`` (and ``tracestate``, baggage) carries."""
    return propagate.extract(list(headers), getter=_HEADER_LIST)  # type: ignore[arg-type]


def outgoing() -> dict[str, str]:
    """The headers (``traceparent``...) that continue the current trace in a request sent
    now; empty when nothing is traced."""
    if not trace.get_current_span().get_span_context().is_valid:
        return {}
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def carried(traceparent: str | None) -> context.Context | None:
    """The context of a stored ``traceparent`` (a job's), or None without one."""
    if not traceparent:
        return None
    return propagate.extract({"traceparent": traceparent})


def received(headers: Mapping[str, Any] | None) -> context.Context:
    """The context a message's headers carry (a RabbitMQ message's ``traceparent``...)."""
    return propagate.extract({k: str(v) for k, v in (headers or {}).items()})


def current_traceparent() -> str | None:
    """The current trace as a ``traceparent`` value, to store with work done later."""
    return outgoing().get("traceparent")


# -- the tracer of the request being traced ----------------------------------------------------
def with_tracer(tracer: Tracer, span: Span) -> context.Context:
    """A context in which ``span`` is current and, when it is recorded (sampled),
    ``current_tracer`` finds ``tracer``: what runs under a span the sampler dropped makes no
    span of its own (its ``traceparent`` still tells the next process it was dropped)."""
    if not span.is_recording():
        return trace.set_span_in_context(span)
    return trace.set_span_in_context(span, context.set_value(_TRACER_KEY, tracer))


def current_tracer() -> Tracer | None:
    """The tracer of the request being traced here (None: nothing is traced, or the sampler
    dropped the request's trace)."""
    tracer: Tracer | None = context.get_value(_TRACER_KEY)  # type: ignore[assignment]
    return tracer


def failed(span: Span, exc: BaseException | None, description: str | None = None) -> None:
    """Mark ``span`` as failed by ``exc`` (its type, an exception event) or ``description``."""
    if exc is not None:
        span.set_attribute("error.type", getattr(exc, "code", None) or type(exc).__name__)
        if isinstance(exc, Exception):
            span.record_exception(exc)
        description = description or str(exc) or type(exc).__name__
    span.set_status(Status(StatusCode.ERROR, description))


def usage_attributes(prompt_tokens: int | None, completion_tokens: int | None
                     ) -> dict[str, int]:
    """``gen_ai.usage.*`` of the tokens an OpenAI usage object reports."""
    out = {}
    if prompt_tokens is not None:
        out["gen_ai.usage.input_tokens"] = prompt_tokens
    if completion_tokens is not None:
        out["gen_ai.usage.output_tokens"] = completion_tokens
    return out
