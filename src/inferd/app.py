"""``create_app(settings)``: build the services and mount every route, in one place."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.types import Scope

from inferd import __version__
from inferd.http import errors, routes
from inferd.http import jobs as job_routes
from inferd.http import metrics as metrics_routes
from inferd.http.auth import AuthMiddleware, RequirePrincipal
from inferd.http.fast import Answer
from inferd.http.front import HotPathApp
from inferd.http.middleware import RequestGuard
from inferd.http.openai import chat
from inferd.http.openapi import install_openapi
from inferd.http.tracing import TraceRequests
from inferd.lifecycle import Drain
from inferd.services import Services
from inferd.settings import Settings
from inferd.tracing import start_tracing


def create_app(settings: Settings, drain: Drain | None = None) -> FastAPI:
    """The ASGI application, as the server runs it (``inferd.http.front.HotPathApp``: chat
    requests and job submissions skip the framework); services start in its lifespan and stop
    with it. ``drain``: the process's stop, begun by the server's signal handler (a fresh one
    that never begins without it). With an OTLP endpoint in the environment every request is
    traced (``inferd.tracing``); without one nothing is."""
    tracing = start_tracing(settings.cluster.role)
    tracer = tracing.tracer if tracing is not None else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            services = await Services.start(settings, drain or Drain(), tracer)
            app.state.services = services
            scrapes = await metrics_routes.start_metrics_port(services) \
                if settings.http.metrics_port else None
            try:
                yield
            finally:
                if scrapes is not None:
                    await scrapes.cleanup()
                await services.close()
        finally:
            if tracing is not None:  # the spans still buffered are sent now
                tracing.shutdown()

    # inferd exports its own Prometheus metrics and traces (TraceRequests); the framework's
    # OpenTelemetry hooks would look up providers on every request.
    app = HotPathApp(hot_answer, title="inferd", version=__version__, lifespan=lifespan,
                     # served from the package, declared like every route: http/docs.py
                     openapi_url=None, docs_url=None, redoc_url=None,
                     telemetry={"tracing": False, "metrics": False, "logs": False})
    errors.install(app)
    install_openapi(app)
    for router in routes.ROUTERS:  # every route declared once (inferd.http.operation)
        app.include_router(router)
    # innermost: a request without a principal never reaches a route (401)
    app.add_middleware(RequirePrincipal)
    app.add_middleware(AuthMiddleware)  # inside RequestGuard: sees the request id
    app.add_middleware(RequestGuard, max_body_bytes=settings.http.max_body_bytes,
                       max_file_bytes=settings.http.max_file_bytes)
    if tracer is not None:  # around the guard: a refused body is a traced request too
        app.add_middleware(TraceRequests, tracer=tracer, fast=hot_answer)
    if settings.http.cors_origins:  # outermost: a preflight is answered before auth asks for a key
        app.add_middleware(CORSMiddleware, allow_origins=settings.http.cors_origins,
                           allow_methods=["*"], allow_headers=["*"],
                           expose_headers=["Retry-After", "X-Request-Id"])
    return app


def hot_answer(scope: Scope) -> Answer | None:
    """The fast path's answer to this HTTP request, if one answers it: a chat completion or a
    job submission (``Prefer: respond-async`` to any of the job endpoints)."""
    if scope["method"] != "POST":
        return None
    path = scope["path"]
    if path == job_routes.PATH:
        return job_routes.answer
    if path not in job_routes.ASYNC_PATHS:
        return None
    if job_routes.wants_async(scope):
        return job_routes.answer
    return chat.answer if path in chat.PATHS else None
