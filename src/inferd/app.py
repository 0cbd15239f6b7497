"""``create_app(settings)``: build the services and mount every route, in one place."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.types import Scope

from inferd import __version__
from inferd.http import anthropic as anthropic_routes
from inferd.http import batches as batch_routes
from inferd.http import docs as docs_routes
from inferd.http import errors, health
from inferd.http import files as file_routes
from inferd.http import images as image_routes
from inferd.http import internal as engine_routes
from inferd.http import jobs as job_routes
from inferd.http import metrics as metrics_routes
from inferd.http import openai as openai_routes
from inferd.http.admin import keys as admin_keys
from inferd.http.admin import loading as admin_loading
from inferd.http.admin import models as admin_models
from inferd.http.admin import prompts as admin_prompts
from inferd.http.admin import replicas as admin_replicas
from inferd.http.admin import tables as admin_tables
from inferd.http.admin import usage as admin_usage
from inferd.http.admin import usage_series
from inferd.http.auth import AuthMiddleware, RequirePrincipal
from inferd.http.compat import contexts_results, model_host, proxy_toolkit, queued_generate
from inferd.http.jobs import JobsFastPath
from inferd.http.middleware import RequestGuard
from inferd.http.openai import chat
from inferd.http.openai.chat import ChatFastPath
from inferd.http.openapi import install_openapi
from inferd.http.ui import router as ui_router
from inferd.services import Services
from inferd.settings import Settings


def create_app(settings: Settings) -> FastAPI:
    """The ASGI application; services start in its lifespan and stop with it."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = await Services.start(settings)
        app.state.services = services
        scrapes = await metrics_routes.start_metrics_port(services) \
            if settings.metrics_port else None
        try:
            yield
        finally:
            if scrapes is not None:
                await scrapes.cleanup()
            await services.close()

    # inferd exports its own Prometheus metrics; the framework's OpenTelemetry hooks would
    # look up providers on every request.
    app = FastAPI(title="inferd", version=__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None,  # served from the package: http/docs.py
                  telemetry={"tracing": False, "metrics": False, "logs": False})
    errors.install(app)
    app.include_router(docs_routes.router)
    install_openapi(app)
    app.include_router(health.router)
    app.include_router(openai_routes.router)
    app.include_router(anthropic_routes.router)
    app.include_router(admin_models.router)
    app.include_router(admin_replicas.router)
    app.include_router(proxy_toolkit.router)  # S3: keys, models, replicas
    for module in (metrics_routes, admin_keys, admin_usage, usage_series, admin_tables,
                   admin_loading, admin_prompts):
        app.include_router(module.router)
    for module in (job_routes, file_routes, batch_routes,
                   contexts_results, queued_generate, model_host):  # S0, S1, S4
        app.include_router(module.router)
    app.include_router(image_routes.router)  # /v1/images/*, S2's /model/generate
    app.include_router(engine_routes.router)  # engines registering with a gateway
    app.include_router(ui_router)
    # innermost: a request without a principal never reaches a route (401)
    app.add_middleware(RequirePrincipal)
    # after auth, before the framework's routing (see inferd.http.fast)
    app.add_middleware(JobsFastPath)
    app.add_middleware(ChatFastPath)
    app.add_middleware(AuthMiddleware)  # inside RequestGuard: sees the request id
    app.add_middleware(RequestGuard, max_body_bytes=settings.max_body_bytes,
                       max_file_bytes=settings.max_file_bytes)
    if settings.cors_origins:  # outermost: a preflight is answered before auth asks for a key
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins,
                           allow_methods=["*"], allow_headers=["*"],
                           expose_headers=["Retry-After", "X-Request-Id"])
    return app


def is_hot(scope: Scope) -> bool:
    """The requests a fast path answers: the server runs them past the framework's outer
    layers (``http.middleware.HotPathFront``)."""
    return chat.is_fast(scope) or job_routes.is_fast(scope)
