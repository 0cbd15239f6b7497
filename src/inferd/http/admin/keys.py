"""``/admin/v1/keys``: create, list, get, change, disable and delete API keys (admin scope)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from inferd.auth.admin import KeyAdmin, KeySpec, KeyUpdate
from inferd.http.auth import AdminDep
from inferd.http.deps import PrincipalDep, RowId, ServicesDep, read_strict
from inferd.http.operation import endpoint
from inferd.http.responses import json_response
from inferd.schemas import answers as a
from inferd.schemas import answers_control as c

router = APIRouter(prefix="/admin/v1/keys", tags=["admin"])
NO_NUL = r"^[^\x00]*$"  # no column holds NUL (PostgreSQL refuses it)


def get_key_admin(services: ServicesDep, _admin: AdminDep) -> KeyAdmin:
    return services.auth.admin


KeyAdminDep = Annotated[KeyAdmin, Depends(get_key_admin)]


@endpoint(router, "POST", "", access="admin", answer=c.ApiKey, status=201, body=KeySpec,
          errors=(404, 409, 413, 503))
async def create_key(request: Request, admin: KeyAdminDep) -> Response:
    """A new key; the answer is the only time the key itself is shown."""
    spec = await read_strict(request, KeySpec)
    return json_response(await admin.create(spec), status=201)


@endpoint(router, "GET", "", access="audit", answer=c.ApiKeyList, errors=(503,))
async def list_keys(
        admin: KeyAdminDep,
        after: Annotated[int | None, Query(ge=0, le=2**63 - 1)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        owner: Annotated[str | None, Query(max_length=191, pattern=NO_NUL)] = None,
        team: Annotated[str | None, Query(max_length=191, pattern=NO_NUL)] = None,
        name: Annotated[str | None, Query(max_length=200, pattern=NO_NUL)] = None,
        prefix: Annotated[str | None, Query(max_length=32, pattern=NO_NUL)] = None,
        search: Annotated[str | None, Query(max_length=200, pattern=NO_NUL)] = None,
        team_id: Annotated[int | None, Query(ge=0, le=2**63 - 1)] = None,
        user_id: Annotated[int | None, Query(ge=0, le=2**63 - 1)] = None,
) -> Response:
    """Keys by id, ``limit`` after the id ``after`` (``has_more``: another page follows, from
    ``last_id``). ``owner``, ``team``, ``team_id`` and ``user_id`` match exactly, ``name`` and
    ``prefix`` (the display prefix, ``sk-inferd-AbCd``) from the start, ``search`` anywhere in
    the name, owner, team or prefix."""
    return json_response(await admin.page(after=after, limit=limit, owner=owner, team=team,
                                          name=name, prefix=prefix, search=search,
                                          team_id=team_id, user_id=user_id))


@endpoint(router, "GET", "/{key_id}", access="audit", answer=c.ApiKey, errors=(404, 503))
async def get_key(key_id: RowId, admin: KeyAdminDep, principal: PrincipalDep) -> Response:
    """A key with its webhook secret (but to an auditor key, which reads and signs nothing)."""
    view = await admin.get(key_id)
    if principal.is_auditor:
        view.pop("webhook_secret", None)
    return json_response(view)


@endpoint(router, "PATCH", "/{key_id}", access="admin", answer=c.ApiKey, body=KeyUpdate,
          errors=(404, 409, 413, 503))
async def update_key(key_id: RowId, request: Request, admin: KeyAdminDep) -> Response:
    """Change limits, models, scope, expiry, metadata or ``enabled``; other fields stay."""
    change = await read_strict(request, KeyUpdate)
    return json_response(await admin.update(key_id, change))


@endpoint(router, "POST", "/{key_id}/disable", access="admin", answer=c.ApiKey,
          errors=(404, 409, 503))
async def disable_key(key_id: RowId, admin: KeyAdminDep) -> Response:
    return json_response(await admin.disable(key_id))


@endpoint(router, "POST", "/{key_id}/enable", access="admin", answer=c.ApiKey, errors=(404, 503))
async def enable_key(key_id: RowId, admin: KeyAdminDep) -> Response:
    return json_response(await admin.update(key_id, KeyUpdate(enabled=True)))


@endpoint(router, "DELETE", "/{key_id}", access="admin", answer=a.Deleted, errors=(404, 409, 503))
async def delete_key(key_id: RowId, admin: KeyAdminDep) -> Response:
    await admin.delete(key_id)
    return json_response({"id": key_id, "object": "api_key", "deleted": True})
