"""``/admin/v1/teams`` and ``/admin/v1/users``: teams, users and team membership (admin
scope for changes, admin and auditor keys for reads)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from inferd.auth.teams import MemberSpec, TeamAdmin, TeamSpec, TeamUpdate, UserSpec, UserUpdate
from inferd.http.auth import AdminDep
from inferd.http.deps import RowId, ServicesDep, read_strict
from inferd.http.operation import endpoint
from inferd.http.responses import json_response
from inferd.schemas import answers as a
from inferd.schemas import answers_control as c

teams_router = APIRouter(prefix="/admin/v1/teams", tags=["admin"])
users_router = APIRouter(prefix="/admin/v1/users", tags=["admin"])
NO_NUL = r"^[^\x00]*$"


def get_team_admin(services: ServicesDep, _admin: AdminDep) -> TeamAdmin:
    return services.auth.teams


TeamAdminDep = Annotated[TeamAdmin, Depends(get_team_admin)]
After = Annotated[int | None, Query(ge=0, le=2**63 - 1)]
Limit = Annotated[int, Query(ge=1, le=1000)]
Search = Annotated[str | None, Query(max_length=200, pattern=NO_NUL)]


# -- teams ------------------------------------------------------------------------------------
@endpoint(teams_router, "POST", "", access="admin", answer=c.Team, status=201, body=TeamSpec,
          errors=(409, 413, 503))
async def create_team(request: Request, admin: TeamAdminDep) -> Response:
    """A new team: its models and limits apply to each of its keys besides their own."""
    spec = await read_strict(request, TeamSpec)
    return json_response(await admin.create_team(spec), status=201)


@endpoint(teams_router, "GET", "", access="audit", answer=c.TeamList, errors=(503,))
async def list_teams(admin: TeamAdminDep, after: After = None, limit: Limit = 100,
                     search: Search = None) -> Response:
    """Teams by id, ``limit`` after the id ``after`` (``has_more``: another page follows, from
    ``last_id``); ``search``: anywhere in the name."""
    return json_response(await admin.team_page(after=after, limit=limit, search=search))


@endpoint(teams_router, "GET", "/{team_id}", access="audit", answer=c.Team, errors=(404, 503))
async def get_team(team_id: RowId, admin: TeamAdminDep) -> Response:
    return json_response(await admin.get_team(team_id))


@endpoint(teams_router, "PATCH", "/{team_id}", access="admin", answer=c.Team, body=TeamUpdate,
          errors=(404, 409, 413, 503))
async def update_team(team_id: RowId, request: Request, admin: TeamAdminDep) -> Response:
    """Change the name, models, limits or metadata (the fields sent); every gateway applies
    it to the team's keys at once."""
    change = await read_strict(request, TeamUpdate)
    return json_response(await admin.update_team(team_id, change))


@endpoint(teams_router, "DELETE", "/{team_id}", access="admin", answer=a.Deleted,
          errors=(404, 409, 503))
async def delete_team(team_id: RowId, admin: TeamAdminDep) -> Response:
    """Delete a team without keys (409 ``team_has_keys`` otherwise)."""
    await admin.delete_team(team_id)
    return json_response({"id": team_id, "object": "team", "deleted": True})


@endpoint(teams_router, "GET", "/{team_id}/members", access="audit", answer=c.MemberList,
          errors=(404, 503))
async def list_members(team_id: RowId, admin: TeamAdminDep, after: After = None,
                       limit: Limit = 100) -> Response:
    """Members by user id, ``limit`` after the user id ``after``."""
    return json_response(await admin.members(team_id, after=after, limit=limit))


@endpoint(teams_router, "PUT", "/{team_id}/members/{user_id}", access="admin",
          answer=c.Member, body=MemberSpec, errors=(404, 409, 413, 503))
async def set_member(team_id: RowId, user_id: RowId, request: Request,
                     admin: TeamAdminDep) -> Response:
    """Add a user to the team, or change their role (``owner``, ``member``, ``viewer``)."""
    spec = await read_strict(request, MemberSpec)
    return json_response(await admin.set_member(team_id, user_id, spec))


@endpoint(teams_router, "DELETE", "/{team_id}/members/{user_id}", access="admin",
          answer=a.Deleted, errors=(404, 409, 503))
async def remove_member(team_id: RowId, user_id: RowId, admin: TeamAdminDep) -> Response:
    """Take a user out of the team (409 ``member_has_keys`` while they hold its keys)."""
    await admin.remove_member(team_id, user_id)
    return json_response({"id": user_id, "object": "team.member", "deleted": True})


# -- users ------------------------------------------------------------------------------------
@endpoint(users_router, "POST", "", access="admin", answer=c.User, status=201, body=UserSpec,
          errors=(409, 413, 503))
async def create_user(request: Request, admin: TeamAdminDep) -> Response:
    """A new user: keys may belong to them, and their limits apply across those keys."""
    spec = await read_strict(request, UserSpec)
    return json_response(await admin.create_user(spec), status=201)


@endpoint(users_router, "GET", "", access="audit", answer=c.UserList, errors=(503,))
async def list_users(admin: TeamAdminDep, after: After = None, limit: Limit = 100,
                     search: Search = None) -> Response:
    """Users by id, ``limit`` after the id ``after``; ``search``: in the name or email."""
    return json_response(await admin.user_page(after=after, limit=limit, search=search))


@endpoint(users_router, "GET", "/{user_id}", access="audit", answer=c.User, errors=(404, 503))
async def get_user(user_id: RowId, admin: TeamAdminDep) -> Response:
    return json_response(await admin.get_user(user_id))


@endpoint(users_router, "PATCH", "/{user_id}", access="admin", answer=c.User, body=UserUpdate,
          errors=(404, 409, 413, 503))
async def update_user(user_id: RowId, request: Request, admin: TeamAdminDep) -> Response:
    """Change the name, email, role, limits or ``disabled`` (the fields sent). A disabled
    user's keys stop working on every gateway at once."""
    change = await read_strict(request, UserUpdate)
    return json_response(await admin.update_user(user_id, change))


@endpoint(users_router, "DELETE", "/{user_id}", access="admin", answer=a.Deleted,
          errors=(404, 409, 503))
async def delete_user(user_id: RowId, admin: TeamAdminDep) -> Response:
    """Delete a user without keys (409 ``user_has_keys`` otherwise)."""
    await admin.delete_user(user_id)
    return json_response({"id": user_id, "object": "user", "deleted": True})
