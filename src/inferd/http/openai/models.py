"""``GET /v1/models`` and ``GET /v1/models/{id}``."""

from __future__ import annotations

from typing import TypedDict

from fastapi import APIRouter
from starlette.responses import Response

from inferd.engines.base import ModelInfo
from inferd.errors import ModelNotFound
from inferd.http.deps import PrincipalDep, ServicesDep
from inferd.http.operation import endpoint
from inferd.http.responses import json_response
from inferd.schemas import answers as a

router = APIRouter(tags=["openai"])


class ModelObject(TypedDict):
    """A model as ``/v1/models`` shows it."""

    id: str
    object: str
    created: int
    owned_by: str
    capabilities: list[str]
    context_length: int | None
    kind: str


def model_object(info: ModelInfo, created: int) -> ModelObject:
    return {"id": info.name, "object": "model", "created": created, "owned_by": info.owned_by,
            "capabilities": sorted(info.capabilities), "context_length": info.context_length,
            "kind": info.kind}


@endpoint(router, "GET", "/v1/models", access="key", answer=a.ModelList)
async def list_models(services: ServicesDep, principal: PrincipalDep) -> Response:
    """The models the caller's key may use."""
    created = services.started_at
    return json_response({"object": "list",
                          "data": [model_object(m, created)
                                   for m in services.inference.visible_models(principal)]})


@endpoint(router, "GET", "/v1/models/{model_id:path}", access="key", answer=a.Model, errors=(404,))
async def retrieve_model(model_id: str, services: ServicesDep,
                         principal: PrincipalDep) -> Response:
    name = services.router.resolve(model_id)
    allowed = services.inference.allowed_names(principal)
    if allowed is not None and name not in allowed and not principal.may_use(model_id):
        raise ModelNotFound(model_id)
    info = next((m for m in services.router.models() if m.name == name), None)
    if info is None:
        raise ModelNotFound(model_id)
    return json_response(model_object(info, services.started_at))
