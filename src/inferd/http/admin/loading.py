"""``/admin/v1/engines``: in-process models that load on demand: state, load, unload."""

from __future__ import annotations

from typing import Literal, TypedDict

from fastapi import APIRouter
from starlette.responses import Response

from inferd.engines.residency import Resident
from inferd.errors import Conflict, ModelNotFound
from inferd.http.auth import AdminDep
from inferd.http.deps import ServicesDep
from inferd.http.operation import endpoint
from inferd.http.responses import json_response
from inferd.schemas import answers_control as c
from inferd.services import Services

router = APIRouter(prefix="/admin/v1", tags=["admin"])


def local_models(services: Services) -> list[Resident]:
    return [e for e in services.router.engines() if isinstance(e, Resident)]


class EngineView(TypedDict):
    """An in-process model as the admin API shows it (``c.Engine``)."""

    id: str
    object: Literal["model"]
    state: str  # unloaded | loading | loaded
    load: Literal["startup", "on_demand"]
    keep_alive: float
    active_requests: int
    parallel: int
    n_ctx: int
    n_threads: int


def view(engine: Resident) -> EngineView:
    """What the admin API shows of one model: loaded / loading / unloaded, and why."""
    return {"id": engine.name, "object": "model", "state": engine.state,
            "load": engine.spec.load, "keep_alive": engine.spec.keep_alive,
            "active_requests": engine.active, "parallel": engine.spec.parallel,
            "n_ctx": engine.spec.n_ctx, "n_threads": engine.threads}


def find(services: Services, name: str) -> Resident:
    resolved = services.router.resolve(name)
    for engine in local_models(services):
        if engine.name == resolved:
            return engine
    raise ModelNotFound(name)


@endpoint(router, "GET", "/engines", access="audit", answer=c.EngineList)
async def list_engines(services: ServicesDep, _admin: AdminDep) -> Response:
    return json_response({"object": "list", "data": [view(e) for e in local_models(services)]})


@endpoint(router, "POST", "/engines/{model:path}/load", access="admin", answer=c.Engine,
          errors=(404, 409, 503))
async def load(model: str, services: ServicesDep, _admin: AdminDep) -> Response:
    engine = find(services, model)
    before = view(engine)
    await engine.load()
    after = view(engine)
    await services.control.audit.record("engine.load", "engine", engine.name, before=before,
                                        after=after)
    return json_response(after)


@endpoint(router, "POST", "/engines/{model:path}/unload", access="admin", answer=c.Engine,
          errors=(404, 409))
async def unload(model: str, services: ServicesDep, _admin: AdminDep) -> Response:
    engine = find(services, model)
    before = view(engine)
    if not await engine.unload():
        raise Conflict(f"The model '{engine.name}' has requests running; try again later.",
                       param="model")
    after = view(engine)
    await services.control.audit.record("engine.unload", "engine", engine.name, before=before,
                                        after=after)
    return json_response(after)
