"""``GET /metrics``: Prometheus text format, rendered off the event loop. Public, like
``/health``, unless ``metrics_require_key`` is on: then the auth middleware answers 401 to a
caller without a valid key (``inferd.http.auth``)."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from inferd.http.deps import ServicesDep
from inferd.metrics import CONTENT_TYPE

router = APIRouter(tags=["monitoring"])


@router.get("/metrics")
async def metrics(services: ServicesDep) -> Response:
    return Response(await services.metering.metrics.render_off_loop(), media_type=CONTENT_TYPE)
