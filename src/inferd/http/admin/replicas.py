"""``/admin/v1/replicas``: where models run, with live state (admin scope).

A replica's view shows its health, requests in flight, cooldown, last error and latency; its
upstream credential is never shown (only ``has_api_key``).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from inferd.http.admin.models import ModelAdminDep
from inferd.http.deps import read_strict
from inferd.http.responses import json_response
from inferd.routing.manage import ReplicaCreate, ReplicaUpdate
from inferd.settings import ReplicaSpec

router = APIRouter(prefix="/admin/v1", tags=["admin"])


@router.get("/replicas")
async def list_replicas(admin: ModelAdminDep) -> Response:
    return json_response({"object": "list", "data": await admin.replicas()})


@router.post("/replicas")
async def create_replica(request: Request, admin: ModelAdminDep) -> Response:
    body = await read_strict(request, ReplicaCreate)
    spec = ReplicaSpec.model_validate(body.model_dump(exclude={"model"}))
    return json_response(await admin.create_replica(body.model, spec), status=201)


@router.get("/replicas/{replica_id}")
async def get_replica(replica_id: str, admin: ModelAdminDep) -> Response:
    return json_response(await admin.replica(replica_id))


@router.patch("/replicas/{replica_id}")
async def update_replica(replica_id: str, request: Request, admin: ModelAdminDep) -> Response:
    body = await read_strict(request, ReplicaUpdate)
    return json_response(await admin.update_replica(replica_id, body))


@router.delete("/replicas/{replica_id}")
async def delete_replica(replica_id: str, admin: ModelAdminDep) -> Response:
    return json_response(await admin.delete_replica(replica_id))
