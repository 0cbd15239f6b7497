"""``GET /health`` (the process is alive) and ``GET /ready`` (it can serve)."""

from __future__ import annotations

import time
from typing import NotRequired, TypedDict

from fastapi import APIRouter, Request
from starlette.responses import Response

from inferd.http.deps import ServicesDep
from inferd.http.operation import endpoint
from inferd.http.responses import json_response
from inferd.schemas import answers_control as c


class Readiness(TypedDict):
    """The body ``/ready`` answers."""

    status: str
    store: bool | None
    store_writes: bool | None
    models: NotRequired[dict[str, bool]]
    storage_fault: NotRequired[str | None]

router = APIRouter(tags=["health"])
STARTED = time.time()  # when this process loaded its routes: the UI shows the uptime


@endpoint(router, "GET", "/health", access="public", answer=c.Health)
async def health() -> Response:
    return json_response({"status": "ok", "uptime_seconds": round(time.time() - STARTED, 1)})


# 400: a bad ``?deep=``; 503: not ready
@endpoint(router, "GET", "/ready", access="public", answer=c.Readiness, also={503: c.Readiness},
          errors=(400,))
async def ready(request: Request, services: ServicesDep, deep: bool = False) -> Response:
    """Ready when this process can take new work: not draining (``inferd.lifecycle``), every
    model loaded, and, where the store is this process's own (a SQLite file), the store
    answers and writes to it succeed.

    A shared database (PostgreSQL, MySQL) is left out: its outage or failover is every
    gateway's at once, and a readiness that followed it would empty the Service, turning each
    request's 503 ``store_unavailable`` into refused connections. ``?deep=true`` checks the
    store whatever it is, for people and monitoring.

    ``store_writes`` turns false after a few writes in a row failed for lack of storage (disk
    full, read-only: ``inferd.store.faults``), while reads may still work; it turns true again
    at the next write that succeeds (``/ready`` tries one itself while it is false).

    With ``ready_require_key`` the models are named only to a caller with a valid key (the
    auth middleware puts its principal in the request's state); the status is for anyone."""
    models = {e.name: e.ready() for e in services.router.engines()}
    checked = deep or services.db.dialect == "sqlite"
    store = await services.db.ping() if checked else None
    writes = (bool(store) and await services.db.writable()) if checked else None
    draining = services.drain.active
    ok = not draining and store is not False and writes is not False and all(models.values())
    status = "ready" if ok else ("draining" if draining else "not_ready")
    body: Readiness = {"status": status, "store": store, "store_writes": writes}
    if (not services.settings.http.ready_require_key
            or "principal" in request.scope.get("state", {})):
        body["models"] = models
    if store and not writes:
        body["storage_fault"] = services.db.writes.last_fault
    return json_response(body, status=200 if ok else 503)
