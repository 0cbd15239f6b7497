"""``/admin/v1/replicas``: where models run, with live state (admin scope).

A replica's view shows its health, requests in flight, cooldown, last error and latency; its
upstream credential is never shown (only ``has_api_key``).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from inferd.http.admin.models import ModelAdminDep
from inferd.http.deps import read_strict
from inferd.http.operation import endpoint
from inferd.http.responses import json_response
from inferd.routing.manage import ReplicaCreate, ReplicaUpdate
from inferd.schemas import answers as a
from inferd.schemas import answers_control as c
from inferd.settings import ReplicaSpec

router = APIRouter(prefix="/admin/v1", tags=["admin"])


@endpoint(router, "GET", "/replicas", access="audit", answer=c.ReplicaList, errors=(503,))
async def list_replicas(admin: ModelAdminDep) -> Response:
    return json_response({"object": "list", "data": await admin.replicas()})


@endpoint(router, "POST", "/replicas", access="admin", answer=c.Replica, status=201,
          body=ReplicaCreate, errors=(404, 409, 413, 503))
async def create_replica(request: Request, admin: ModelAdminDep) -> Response:
    body = await read_strict(request, ReplicaCreate)
    spec = ReplicaSpec.model_validate(body.model_dump(exclude={"model"}))
    return json_response(await admin.create_replica(body.model, spec), status=201)


@endpoint(router, "POST", "/replicas/test", access="admin", answer=c.ReplicaTest,
          body=ReplicaSpec, errors=(413, 503), writes=False)
async def test_replica(request: Request, admin: ModelAdminDep) -> Response:
    """Reach a replica before saving it: ``ok`` with the models the upstream lists, or the
    error it gave (the replica is not stored)."""
    body = await read_strict(request, ReplicaSpec)
    return json_response(await admin.test_replica(body))


@endpoint(router, "GET", "/replicas/{replica_id}", access="audit", answer=c.Replica,
          errors=(404, 503))
async def get_replica(replica_id: str, admin: ModelAdminDep) -> Response:
    return json_response(await admin.replica(replica_id))


@endpoint(router, "PATCH", "/replicas/{replica_id}", access="admin", answer=c.Replica,
          body=ReplicaUpdate, errors=(404, 409, 413, 503))
async def update_replica(replica_id: str, request: Request, admin: ModelAdminDep) -> Response:
    body = await read_strict(request, ReplicaUpdate)
    return json_response(await admin.update_replica(replica_id, body))


@endpoint(router, "DELETE", "/replicas/{replica_id}", access="admin", answer=a.Deleted,
          errors=(404, 503))
async def delete_replica(replica_id: str, admin: ModelAdminDep) -> Response:
    return json_response(await admin.delete_replica(replica_id))
