"""``GET /metrics``: Prometheus text format (public, like ``/health``), rendered off the event
loop."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from inferd.http.deps import ServicesDep
from inferd.metrics import CONTENT_TYPE

router = APIRouter(tags=["monitoring"])


@router.get("/metrics")
async def metrics(services: ServicesDep) -> Response:
    return Response(await services.metering.metrics.render_off_loop(), media_type=CONTENT_TYPE)
