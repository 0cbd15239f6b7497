"""``GET /v1/models`` and ``GET /v1/models/{id}``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.responses import Response

from inferd.auth.principal import Principal
from inferd.engines.base import ModelInfo
from inferd.errors import InferdError, ModelNotFound
from inferd.http.deps import PrincipalDep, ServicesDep
from inferd.http.responses import json_response
from inferd.services import Services

router = APIRouter(tags=["openai"])


def model_object(info: ModelInfo, created: int) -> dict[str, Any]:
    return {"id": info.name, "object": "model", "created": created, "owned_by": info.owned_by,
            "capabilities": sorted(info.capabilities), "context_length": info.context_length,
            "kind": info.kind}


def _allowed(services: Services, principal: Principal) -> set[str] | None:
    """Canonical names of the models the caller's key may use (None: every model)."""
    if principal.allowed_models is None:
        return None
    names = set()
    for name in principal.allowed_models:
        try:
            names.add(services.router.resolve(name))
        except InferdError:
            continue
    return names


@router.get("/v1/models")
async def list_models(services: ServicesDep, principal: PrincipalDep) -> Response:
    """The models the caller's key may use."""
    created = services.started_at
    allowed = _allowed(services, principal)
    return json_response({"object": "list",
                          "data": [model_object(m, created) for m in services.router.models()
                                   if allowed is None or m.name in allowed]})


@router.get("/v1/models/{model_id:path}")
async def retrieve_model(model_id: str, services: ServicesDep,
                         principal: PrincipalDep) -> Response:
    name = services.router.resolve(model_id)
    allowed = _allowed(services, principal)
    if allowed is not None and name not in allowed and not principal.may_use(model_id):
        raise ModelNotFound(model_id)
    info = next((m for m in services.router.models() if m.name == name), None)
    if info is None:
        raise ModelNotFound(model_id)
    return json_response(model_object(info, services.started_at))
