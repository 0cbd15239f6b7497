"""``/admin/v1/models``: public models, their aliases and fallbacks (admin scope)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from inferd.http.auth import AdminDep
from inferd.http.deps import ServicesDep, read_strict
from inferd.http.operation import endpoint
from inferd.http.responses import json_response
from inferd.routing.manage import ModelAdmin, ModelCreate, ModelUpdate
from inferd.schemas import answers as a
from inferd.schemas import answers_control as c

router = APIRouter(prefix="/admin/v1", tags=["admin"])


def get_model_admin(services: ServicesDep, _admin: AdminDep) -> ModelAdmin:
    """The model manager, for admin callers only."""
    return services.control.models


ModelAdminDep = Annotated[ModelAdmin, Depends(get_model_admin)]


@endpoint(router, "GET", "/models", access="audit", answer=c.ManagedModelList, errors=(503,))
async def list_models(admin: ModelAdminDep) -> Response:
    return json_response({"object": "list", "data": await admin.models()})


@endpoint(router, "POST", "/models", access="admin", answer=c.ManagedModel, status=201,
          body=ModelCreate, errors=(409, 413, 503))
async def create_model(request: Request, admin: ModelAdminDep) -> Response:
    body = await read_strict(request, ModelCreate)
    return json_response(await admin.create_model(body), status=201)


@endpoint(router, "GET", "/models/{model:path}", access="audit", answer=c.ManagedModel,
          errors=(404, 503))
async def get_model(model: str, admin: ModelAdminDep) -> Response:
    return json_response(await admin.model_view(await admin.find_model(model)))


@endpoint(router, "PATCH", "/models/{model:path}", access="admin", answer=c.ManagedModel,
          body=ModelUpdate, errors=(404, 409, 413, 503))
async def update_model(model: str, request: Request, admin: ModelAdminDep) -> Response:
    body = await read_strict(request, ModelUpdate)
    return json_response(await admin.update_model(model, body))


@endpoint(router, "DELETE", "/models/{model:path}", access="admin", answer=a.Deleted,
          errors=(404, 409, 503))
async def delete_model(model: str, admin: ModelAdminDep) -> Response:
    return json_response(await admin.delete_model(model))
