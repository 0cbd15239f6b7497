"""``GET /metrics``: Prometheus text format, rendered off the event loop. Public, like
``/health``, unless ``metrics_require_key`` is on: then the auth middleware answers 401 to a
caller without a valid key (``inferd.http.auth``). On a port of its own with
``INFERD_METRICS_PORT``, so that a cluster scrapes it without exposing it on the public
Service (the main port then answers 404 for it)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter
from starlette.responses import Response

from inferd.errors import NotFound
from inferd.http.deps import ServicesDep
from inferd.http.operation import TEXT, endpoint
from inferd.metrics import CONTENT_TYPE
from inferd.services import Services

if TYPE_CHECKING:  # aiohttp's server is imported when the metrics have a port of their own
    from aiohttp import web

router = APIRouter(tags=["monitoring"])


@endpoint(router, "GET", "/metrics", access="public", media=(TEXT,))
async def metrics(services: ServicesDep) -> Response:
    if services.settings.http.metrics_port:
        raise NotFound(f"Metrics are served on port {services.settings.http.metrics_port}.")
    return Response(await services.metering.metrics.render_off_loop(), media_type=CONTENT_TYPE)


async def start_metrics_port(services: Services) -> web.AppRunner:
    """Serve ``GET /metrics`` alone on ``metrics_port`` (same address as the API)."""
    from aiohttp import web

    async def scrape(request: web.Request) -> web.Response:
        body = await services.metering.metrics.render_off_loop()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    app = web.Application()
    app.router.add_get("/metrics", scrape)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    settings = services.settings.http
    await web.TCPSite(runner, settings.host, settings.metrics_port).start()
    return runner
