"""``TraceRequests``: a server span per HTTP request, when tracing is on (``inferd.tracing``).

The app factory adds it only with a tracer, so without one no request pays for it. It wraps the
whole request, the fast paths' (``inferd.http.front``) as the framework's routes': the span is
the child of the request's W3C ``traceparent`` when it has one, and what runs inside (the
request's inference, a job submitted by it) is its child. Its name is the method and the route
(the route's template, ``/v1/jobs/{job_id}``, once the framework has matched one; the method
alone for a path no route serves); its
attributes are HTTP's semantic conventions and the request id. The probes (``PROBES``: health,
readiness, metrics scrapes) are not traced: they are not traffic, and an orchestrator sends
them every few seconds.
"""

from __future__ import annotations

from collections.abc import Callable

from opentelemetry.context import attach, detach
from opentelemetry.util.types import AttributeValue
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from inferd.tracing import SpanKind, Tracer, failed, incoming, with_tracer

PROBES = frozenset({"/health", "/ready", "/metrics"})


class TraceRequests:
    """Traces every HTTP request with ``tracer``; ``fast`` tells the requests a fast path
    answers (their path is their route: the framework matches none for them)."""

    def __init__(self, app: ASGIApp, tracer: Tracer, fast: Callable[[Scope], object]) -> None:
        self.app = app
        self.tracer = tracer
        self.fast = fast

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PROBES:
            await self.app(scope, receive, send)
            return
        method: str = scope["method"]
        path: str = scope["path"]
        attributes: dict[str, AttributeValue] = {
            "http.request.method": method, "url.path": path,
            "url.scheme": scope.get("scheme", "http")}
        server = scope.get("server")
        if server:
            attributes["server.address"], attributes["server.port"] = server[0], server[1]
        tracer = self.tracer
        route: str | None = path if self.fast(scope) else None
        span = tracer.start_span(f"{method} {route}" if route else method,
                                 context=incoming(scope["headers"]), kind=SpanKind.SERVER,
                                 attributes=attributes)
        status = 0

        async def traced_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        token = attach(with_tracer(tracer, span))
        try:
            await self.app(scope, receive, traced_send)
        except BaseException as exc:
            failed(span, exc)
            raise
        finally:
            detach(token)
            matched = getattr(scope.get("route"), "path", None)
            if matched and matched != route:
                route = matched
                span.update_name(f"{method} {route}")
            ended: dict[str, AttributeValue] = {}  # set at once: each call takes the span's lock
            if route:
                ended["http.route"] = route
            request_id = (scope.get("state") or {}).get("request_id")
            if request_id:
                ended["inferd.request_id"] = request_id
            if status:
                ended["http.response.status_code"] = status
            span.set_attributes(ended)
            if status >= 500:
                failed(span, None, str(status))
            span.end()
