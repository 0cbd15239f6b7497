"""S3's key routes: ``POST /generate_api_key`` and ``POST /delete_api_key`` (admin scope).

``/generate_api_key`` takes ``{"user_id", "allowed_rpm"?}`` and answers
``{"api_key", "id", "enabled"}``; ``/delete_api_key`` takes ``{"user_id", "api_key_id"}`` and
deletes the key, or disables it when it was already used (its usage records stay), 409 when it
is already disabled.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from inferd.auth.admin import KeySpec
from inferd.errors import Conflict, NotFound
from inferd.http.admin.keys import KeyAdminDep
from inferd.http.deps import ServicesDep, read_model
from inferd.http.responses import json_response

router = APIRouter(tags=["s3"])


class GenerateKeyRequest(BaseModel):
    """S3's ``GenerateAPIKeyRequestSchema``."""

    model_config = ConfigDict(extra="ignore")
    user_id: str = Field(min_length=1, max_length=191)
    allowed_rpm: int | None = Field(default=None, ge=1)


class DeleteKeyRequest(BaseModel):
    """S3's ``DeleteAPIKeyRequestSchema``."""

    model_config = ConfigDict(extra="ignore")
    user_id: str = Field(min_length=1)
    api_key_id: int


@router.post("/generate_api_key")
async def generate_api_key(request: Request, admin: KeyAdminDep) -> Response:
    body = await read_model(request, GenerateKeyRequest)
    created = await admin.create(KeySpec(owner=body.user_id, rpm=body.allowed_rpm,
                                         name=f"user {body.user_id}"))
    return json_response({"api_key": created["key"], "id": created["id"],
                          "enabled": created["enabled"]})


@router.post("/delete_api_key")
async def delete_api_key(request: Request, admin: KeyAdminDep,
                         services: ServicesDep) -> Response:
    body = await read_model(request, DeleteKeyRequest)
    row = await admin.store.get(body.api_key_id)
    if row is None or row["owner"] != body.user_id:
        raise NotFound("API key not found for the given user_id and api_key_id",
                       code="key_not_found")
    if not row["enabled"]:
        raise Conflict("API key already disabled", code="key_already_disabled")
    await services.metering.recorder.flush()  # "was it used" must see buffered records
    outcome = await admin.revoke(body.api_key_id)
    return json_response({"message": f"API key {outcome} successfully"})
