"""``/admin/v1/keys``: create, list, get, change, disable and delete API keys (admin scope)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from inferd.auth.admin import KeyAdmin, KeySpec, KeyUpdate
from inferd.http.auth import AdminDep
from inferd.http.deps import RowId, ServicesDep, read_strict
from inferd.http.responses import json_response

router = APIRouter(prefix="/admin/v1/keys", tags=["admin"])


def get_key_admin(services: ServicesDep, _admin: AdminDep) -> KeyAdmin:
    return services.auth.admin


KeyAdminDep = Annotated[KeyAdmin, Depends(get_key_admin)]


@router.post("")
async def create_key(request: Request, admin: KeyAdminDep) -> Response:
    """A new key; the answer is the only time the key itself is shown."""
    spec = await read_strict(request, KeySpec)
    return json_response(await admin.create(spec), status=201)


@router.get("")
async def list_keys(admin: KeyAdminDep, owner: str | None = None,
                    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                    offset: Annotated[int, Query(ge=0)] = 0) -> Response:
    keys = await admin.list(owner=owner, limit=limit, offset=offset)
    return json_response({"object": "list", "data": keys})


@router.get("/{key_id}")
async def get_key(key_id: RowId, admin: KeyAdminDep) -> Response:
    return json_response(await admin.get(key_id))


@router.patch("/{key_id}")
async def update_key(key_id: RowId, request: Request, admin: KeyAdminDep) -> Response:
    """Change limits, models, scope, expiry, metadata or ``enabled``; other fields stay."""
    change = await read_strict(request, KeyUpdate)
    return json_response(await admin.update(key_id, change))


@router.post("/{key_id}/disable")
async def disable_key(key_id: RowId, admin: KeyAdminDep) -> Response:
    return json_response(await admin.disable(key_id))


@router.post("/{key_id}/enable")
async def enable_key(key_id: RowId, admin: KeyAdminDep) -> Response:
    return json_response(await admin.update(key_id, KeyUpdate(enabled=True)))


@router.delete("/{key_id}")
async def delete_key(key_id: RowId, admin: KeyAdminDep) -> Response:
    await admin.delete(key_id)
    return json_response({"id": key_id, "object": "api_key", "deleted": True})
