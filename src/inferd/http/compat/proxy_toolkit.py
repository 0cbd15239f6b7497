"""The proxy toolkit's (Hyperstack LLM Inference Toolkit) routes: API keys, models and
replicas (admin scope).

Keys: ``POST /generate_api_key`` takes ``{"user_id", "allowed_rpm"?}`` and answers
``{"api_key", "id", "enabled"}``; ``POST /delete_api_key`` takes ``{"user_id", "api_key_id"}``
and deletes the key, or disables it when it was already used (its usage records stay), 409 when
it is already disabled.

Models and replicas, on the same manager as ``/admin/v1``: ``GET/POST /models``,
``GET /models/{name}``, ``DELETE /models/{id}``, ``GET/POST /models/{id}/replicas``,
``PUT /models/replicas/{id}``, ``DELETE /replicas/{id}``. (``GET /models/`` with a trailing
slash is the contexts-and-results API's, in ``contexts_results``.)

The toolkit's other routes are shared with inferd's own API: ``POST /chat/completions`` is the
OpenAI chat route without ``/v1`` (``inferd.http.openai.chat``) and ``/tables`` is
``inferd.http.admin.tables``.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from inferd.auth.admin import KeySpec
from inferd.errors import Conflict, NotFound
from inferd.http.admin import models as admin_models
from inferd.http.admin.keys import KeyAdminDep
from inferd.http.admin.models import ModelAdminDep
from inferd.http.deps import RowId, ServicesDep, read_strict
from inferd.http.operation import endpoint
from inferd.http.responses import json_response
from inferd.routing.manage import ModelCreate, ReplicaUpdate
from inferd.schemas import answers as a
from inferd.schemas import answers_control as c
from inferd.schemas import compat
from inferd.schemas.openai import INT32, INT64
from inferd.settings import ReplicaSpec

router = APIRouter(tags=["proxy-toolkit"])


class GenerateKeyRequest(BaseModel):
    """The proxy toolkit's ``GenerateAPIKeyRequestSchema``."""

    model_config = ConfigDict(extra="ignore")
    user_id: str = Field(min_length=1, max_length=191)
    allowed_rpm: int | None = Field(default=None, ge=1, le=INT32)


class DeleteKeyRequest(BaseModel):
    """The proxy toolkit's ``DeleteAPIKeyRequestSchema``."""

    model_config = ConfigDict(extra="ignore")
    user_id: str = Field(min_length=1)
    api_key_id: int = Field(ge=0, le=INT64)


@endpoint(router, "POST", "/generate_api_key", access="admin", answer=compat.GeneratedKey,
          body=GenerateKeyRequest, errors=(413, 503))
async def generate_api_key(request: Request, admin: KeyAdminDep) -> Response:
    body = await read_strict(request, GenerateKeyRequest)
    created = await admin.create(KeySpec(owner=body.user_id, rpm=body.allowed_rpm,
                                         name=f"user {body.user_id}"))
    return json_response({"api_key": created["key"], "id": created["id"],
                          "enabled": created["enabled"]})


@endpoint(router, "POST", "/delete_api_key", access="admin", answer=compat.KeyRevoked,
          body=DeleteKeyRequest, errors=(404, 409, 413, 503))
async def delete_api_key(request: Request, admin: KeyAdminDep,
                         services: ServicesDep) -> Response:
    body = await read_strict(request, DeleteKeyRequest)
    row = await admin.store.get(body.api_key_id)
    if row is None or row["owner"] != body.user_id:
        raise NotFound("API key not found for the given user_id and api_key_id",
                       code="key_not_found")
    if not row["enabled"]:
        raise Conflict("API key already disabled", code="key_already_disabled")
    await services.metering.recorder.flush()  # "was it used" must see buffered records
    outcome = await admin.revoke(body.api_key_id)
    return json_response({"message": f"API key {outcome} successfully"})


# -- models and replicas ----------------------------------------------------------------------
@endpoint(router, "GET", "/models", access="audit", answer=c.ManagedModel, many=True,
          errors=(403, 503))
async def list_models(admin: ModelAdminDep, active: bool | None = None) -> Response:
    return json_response(await admin.models(active))


# The same operation as the admin API's, under the toolkit's path.
endpoint(router, "POST", "/models", access="admin", answer=c.ManagedModel, status=201,
         body=ModelCreate, errors=(403, 409, 413, 503))(admin_models.create_model)


@endpoint(router, "GET", "/models/{model_id:int}/replicas", access="audit", answer=c.Replica,
          many=True, errors=(403, 404, 503))
async def list_replicas(model_id: RowId, admin: ModelAdminDep) -> Response:
    record = await admin.find_model(str(model_id))
    return json_response(await admin.replicas(record.id))


@endpoint(router, "POST", "/models/{model_id:int}/replicas", access="admin", answer=c.Replica,
          status=201, body=ReplicaSpec, errors=(403, 404, 409, 413, 503))
async def create_replica(model_id: RowId, request: Request, admin: ModelAdminDep) -> Response:
    spec = await read_strict(request, ReplicaSpec)
    return json_response(await admin.create_replica(str(model_id), spec), status=201)


@endpoint(router, "PUT", "/models/replicas/{replica_id:int}", access="admin", answer=c.Replica,
          body=ReplicaUpdate, errors=(403, 404, 409, 413, 503))
async def update_replica(replica_id: RowId, request: Request, admin: ModelAdminDep) -> Response:
    body = await read_strict(request, ReplicaUpdate)
    return json_response(await admin.update_replica(str(replica_id), body))


@endpoint(router, "DELETE", "/replicas/{replica_id:int}", access="admin", answer=a.Deleted,
          errors=(403, 404, 503))
async def delete_replica(replica_id: RowId, admin: ModelAdminDep) -> Response:
    return json_response(await admin.delete_replica(str(replica_id)))


@endpoint(router, "GET", "/models/{name}", access="audit", answer=c.ManagedModel,
          errors=(403, 404, 503))
async def get_model(name: str, admin: ModelAdminDep) -> Response:
    record = await admin.store.find_model(name)
    if record is None:
        record = await admin.find_model(name)
    return json_response(await admin.model_view(record))


# a path that is no number names a model for GET only: 405
@endpoint(router, "DELETE", "/models/{model_id:int}", access="admin", answer=a.Deleted,
          errors=(403, 404, 405, 409, 503))
async def delete_model(model_id: RowId, admin: ModelAdminDep) -> Response:
    return json_response(await admin.delete_model(str(model_id)))
