"""``GET /health`` (the process is alive) and ``GET /ready`` (it can serve)."""

from __future__ import annotations

import time

from fastapi import APIRouter
from starlette.responses import Response

from inferd.http.deps import ServicesDep
from inferd.http.responses import json_response

router = APIRouter(tags=["health"])
STARTED = time.time()  # when this process loaded its routes: the UI shows the uptime


@router.get("/health")
async def health() -> Response:
    return json_response({"status": "ok", "uptime_seconds": round(time.time() - STARTED, 1)})


@router.get("/ready")
async def ready(services: ServicesDep) -> Response:
    models = {e.name: e.ready() for e in services.router.engines()}
    store = await services.db.ping()
    ok = store and all(models.values())
    return json_response({"status": "ready" if ok else "not_ready", "store": store,
                          "models": models}, status=200 if ok else 503)
