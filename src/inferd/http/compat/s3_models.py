"""S3's model and replica routes, mapped onto the same manager as ``/admin/v1``.

``GET/POST /models``, ``GET /models/{name}``, ``DELETE /models/{id}``,
``GET/POST /models/{id}/replicas``, ``PUT /models/replicas/{id}``, ``DELETE /replicas/{id}``.
They need an admin key. (``GET /models/`` with a trailing slash is S0's and lives elsewhere.)
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from inferd.http.admin.models import ModelAdminDep
from inferd.http.deps import RowId, read_model
from inferd.http.responses import json_response
from inferd.routing.manage import ModelCreate, ReplicaUpdate
from inferd.settings import ReplicaSpec

router = APIRouter(tags=["s3"])


@router.get("/models")
async def list_models(admin: ModelAdminDep, active: bool | None = None) -> Response:
    return json_response(await admin.models(active))


@router.post("/models")
async def create_model(request: Request, admin: ModelAdminDep) -> Response:
    body = await read_model(request, ModelCreate)
    return json_response(await admin.create_model(body), status=201)


@router.get("/models/{model_id:int}/replicas")
async def list_replicas(model_id: RowId, admin: ModelAdminDep) -> Response:
    record = await admin.find_model(str(model_id))
    return json_response(await admin.replicas(record.id))


@router.post("/models/{model_id:int}/replicas")
async def create_replica(model_id: RowId, request: Request, admin: ModelAdminDep) -> Response:
    spec = await read_model(request, ReplicaSpec)
    return json_response(await admin.create_replica(str(model_id), spec), status=201)


@router.put("/models/replicas/{replica_id:int}")
async def update_replica(replica_id: RowId, request: Request, admin: ModelAdminDep) -> Response:
    body = await read_model(request, ReplicaUpdate)
    return json_response(await admin.update_replica(str(replica_id), body))


@router.delete("/replicas/{replica_id:int}")
async def delete_replica(replica_id: RowId, admin: ModelAdminDep) -> Response:
    return json_response(await admin.delete_replica(str(replica_id)))


@router.get("/models/{name}")
async def get_model(name: str, admin: ModelAdminDep) -> Response:
    record = await admin.store.find_model(name)
    if record is None:
        record = await admin.find_model(name)
    return json_response(await admin.model_view(record))


@router.delete("/models/{model_id:int}")
async def delete_model(model_id: RowId, admin: ModelAdminDep) -> Response:
    return json_response(await admin.delete_model(str(model_id)))
