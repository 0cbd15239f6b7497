"""``GET /metrics``: Prometheus text format (public, like ``/health``)."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from inferd.http.deps import ServicesDep
from inferd.metrics import CONTENT_TYPE

router = APIRouter(tags=["monitoring"])


@router.get("/metrics")
async def metrics(services: ServicesDep) -> Response:
    return Response(services.metering.metrics.render(), media_type=CONTENT_TYPE)
