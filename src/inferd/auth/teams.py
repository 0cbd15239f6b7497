"""Managing teams, users and team membership: what the admin API and ``inferd teams`` /
``inferd users`` share.

``TeamAdmin`` validates a spec, writes through ``TeamStore``, records the change in the audit
log and applies the changes of the affected keys to this process's ``KeyRing`` at once (the
other gateways follow from the key feed, at once when the change is announced). ``team_view``,
``user_view`` and ``member_view`` are the public shapes; lists are pages by cursor
(``has_more``), like keys.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Generic, Literal, TypedDict, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from inferd.audit import AuditLog
from inferd.auth.keys import KeyRing
from inferd.auth.limits import MAX_BUDGET
from inferd.auth.principal import MAX_QUEUE_WEIGHT, BudgetPeriod
from inferd.errors import Conflict, NotFound
from inferd.schemas.openai import INT32, INT64
from inferd.store.teams import (
    KEY_HOLDING_ROLES,
    Change,
    LimitColumns,
    MemberRow,
    TeamColumns,
    TeamRow,
    TeamStore,
    UserColumns,
    UserRow,
)

Role = Literal["admin", "auditor"]
MemberRole = Literal["owner", "member", "viewer"]
NAME = r"^[^\x00]*\S[^\x00]*$"  # not blank, no NUL


class _Limits(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rpm: int | None = Field(default=None, ge=1, le=INT32)
    tpm: int | None = Field(default=None, ge=1, le=INT32)
    token_budget: int | None = Field(default=None, ge=0, le=INT64)
    budget_period: BudgetPeriod | None = None
    # money budget in the price book's currency units per ``budget_period``, and the
    # percentage of it at which a warning is logged (null: 80)
    max_budget: float | None = Field(default=None, ge=0, le=MAX_BUDGET, allow_inf_nan=False)
    budget_alert: int | None = Field(default=None, ge=1, le=100)


class TeamSpec(_Limits):
    """A new team (on update: only the fields sent change)."""

    name: str = Field(max_length=191, pattern=NAME)
    models: list[str] | None = Field(default=None, max_length=1000)
    metadata: dict[str, str] | None = None
    # its weight among teams in the gateway's fair queueing (null: 1)
    queue_weight: float | None = Field(default=None, gt=0, le=MAX_QUEUE_WEIGHT,
                                       allow_inf_nan=False)


class TeamUpdate(TeamSpec):
    name: str = Field(default="", max_length=191, pattern=NAME)


class UserSpec(_Limits):
    """A new user (on update: only the fields sent change). ``role``: the installation role
    (``admin``, ``auditor``; null: none) caps the scope of the user's keys."""

    name: str = Field(max_length=191, pattern=NAME)
    email: str | None = Field(default=None, max_length=320)
    role: Role | None = None
    disabled: bool = False


class UserUpdate(UserSpec):
    name: str = Field(default="", max_length=191, pattern=NAME)

    @field_validator("disabled")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("may be left out, but not null")
        return value


class MemberSpec(BaseModel):
    """A user's role in a team."""

    model_config = ConfigDict(extra="forbid")

    role: MemberRole = "member"


class TeamView(TypedDict):
    """A team as the API shows it (``c.Team``)."""

    id: int
    object: Literal["team"]
    name: str
    models: list[str] | None
    rpm: int | None
    tpm: int | None
    token_budget: int | None
    budget_period: BudgetPeriod | None
    max_budget: float | None
    budget_alert: int | None
    metadata: dict[str, str]
    queue_weight: float | None
    created_at: float
    updated_at: float
    external_id: str | None


class UserView(TypedDict):
    """A user as the API shows it (``c.User``)."""

    id: int
    object: Literal["user"]
    name: str
    email: str | None
    role: Role | None
    disabled: bool
    rpm: int | None
    tpm: int | None
    token_budget: int | None
    budget_period: BudgetPeriod | None
    max_budget: float | None
    budget_alert: int | None
    created_at: float
    updated_at: float
    external_id: str | None
    deprovisioned_at: float | None


class MemberView(TypedDict):
    """A user's role in a team as the API shows it (``c.Member``)."""

    object: Literal["team.member"]
    team_id: int
    user_id: int
    name: str
    email: str | None
    role: MemberRole
    created_at: float


View = TypeVar("View", TeamView, UserView, MemberView)


class Page(TypedDict, Generic[View]):
    """A page by id (``c.TeamList``, ``c.UserList``; members by user id, ``c.MemberList``):
    the next one starts after ``last_id``."""

    object: Literal["list"]
    data: list[View]
    first_id: int | None
    last_id: int | None
    has_more: bool


def team_view(row: TeamRow) -> TeamView:
    return {"id": row["id"], "object": "team", "name": row["name"], "models": row["models"],
            "rpm": row["rpm"], "tpm": row["tpm"], "token_budget": row["token_budget"],
            "budget_period": row["budget_period"], "max_budget": row.get("max_budget"),
            "budget_alert": row.get("budget_alert"), "metadata": row["extra"] or {},
            "queue_weight": row.get("queue_weight"),
            "created_at": row["created_at"], "updated_at": row["updated_at"],
            "external_id": row.get("external_id")}


def user_view(row: UserRow) -> UserView:
    return {"id": row["id"], "object": "user", "name": row["name"], "email": row["email"],
            "role": row["role"], "disabled": bool(row["disabled"]), "rpm": row["rpm"],
            "tpm": row["tpm"], "token_budget": row["token_budget"],
            "budget_period": row["budget_period"], "max_budget": row.get("max_budget"),
            "budget_alert": row.get("budget_alert"), "created_at": row["created_at"],
            "updated_at": row["updated_at"], "external_id": row.get("external_id"),
            "deprovisioned_at": row.get("deprovisioned_at")}


def member_view(row: MemberRow) -> MemberView:
    return {"object": "team.member", "team_id": row["team_id"], "user_id": row["user_id"],
            "name": row["name"], "email": row["email"], "role": row["role"],
            "created_at": row["created_at"]}


def _page(data: list[View], ids: list[int], has_more: bool) -> Page[View]:
    """``data``, whose ids (the cursor: a member's user id) are ``ids``."""
    return {"object": "list", "data": data,
            "first_id": ids[0] if ids else None,
            "last_id": ids[-1] if ids else None,
            "has_more": has_more}


def _limit_columns(spec: _Limits, given: Collection[str], columns: LimitColumns) -> None:
    """Set the limits of ``spec`` among ``given`` (the fields to write) in ``columns``."""
    if "rpm" in given:
        columns["rpm"] = spec.rpm
    if "tpm" in given:
        columns["tpm"] = spec.tpm
    if "token_budget" in given:
        columns["token_budget"] = spec.token_budget
    if "budget_period" in given:
        columns["budget_period"] = spec.budget_period
    if "max_budget" in given:
        columns["max_budget"] = spec.max_budget
    if "budget_alert" in given:
        columns["budget_alert"] = spec.budget_alert


def _given(spec: BaseModel, only_set: bool) -> Collection[str]:
    return spec.model_fields_set if only_set else type(spec).model_fields.keys()


def _team_columns(spec: TeamSpec, *, only_set: bool) -> TeamColumns:
    """The columns of the fields of ``spec`` (``only_set``: of those given only)."""
    given = _given(spec, only_set)
    columns: TeamColumns = {}
    _limit_columns(spec, given, columns)
    if "name" in given:
        columns["name"] = spec.name
    if "models" in given:
        columns["models"] = spec.models
    if "queue_weight" in given:
        columns["queue_weight"] = spec.queue_weight
    if "metadata" in given:
        columns["extra"] = spec.metadata
    return columns


def _user_columns(spec: UserSpec, *, only_set: bool) -> UserColumns:
    """The columns of the fields of ``spec`` (``only_set``: of those given only)."""
    given = _given(spec, only_set)
    columns: UserColumns = {}
    _limit_columns(spec, given, columns)
    if "name" in given:
        columns["name"] = spec.name
    if "email" in given:
        columns["email"] = spec.email
    if "role" in given:
        columns["role"] = spec.role
    if "disabled" in given:
        columns["disabled"] = spec.disabled
    return columns


def _no_team(team_id: int) -> NotFound:
    return NotFound(f"No team with id {team_id}.", code="team_not_found")


def _no_user(user_id: int) -> NotFound:
    return NotFound(f"No user with id {user_id}.", code="user_not_found")


class TeamAdmin:
    """Create, list, change and delete teams, users and memberships."""

    def __init__(self, store: TeamStore, ring: KeyRing | None = None, *,
                 audit: AuditLog | None = None) -> None:
        self.store = store
        self.ring = ring
        self.audit = audit

    async def _record(self, action: str, kind: str, object_id: object,
                      before: TeamView | UserView | MemberView | None,
                      after: TeamView | UserView | MemberView | None) -> None:
        if self.audit is not None:
            await self.audit.record(action, kind, object_id, before=before, after=after)

    async def _apply(self, changes: list[Change]) -> None:
        if self.ring is not None and changes:
            await self.ring.changed_many(changes)

    # -- teams ---------------------------------------------------------------------------------
    async def create_team(self, spec: TeamSpec) -> TeamView:
        return team_view(await self.create_team_values(_team_columns(spec, only_set=False)))

    async def create_team_values(self, values: TeamColumns) -> TeamRow:
        """A new team of checked column values (SCIM's too): its row."""
        row = await self.store.create_team(values)
        await self._record("team.create", "team", row["id"], None, team_view(row))
        return row

    async def team_page(self, *, after: int | None = None, limit: int = 100,
                        search: str | None = None) -> Page[TeamView]:
        rows = await self.store.team_page(after=after, limit=limit + 1, search=search)
        data = [team_view(r) for r in rows[:limit]]
        return _page(data, [v["id"] for v in data], len(rows) > limit)

    async def get_team(self, team_id: int) -> TeamView:
        row = await self.store.team(team_id)
        if row is None:
            raise _no_team(team_id)
        return team_view(row)

    async def update_team(self, team_id: int, change: TeamUpdate) -> TeamView:
        values = _team_columns(change, only_set=True)
        if not values:
            return await self.get_team(team_id)
        return team_view(await self.update_team_values(team_id, values))

    async def update_team_values(self, team_id: int, values: TeamColumns) -> TeamRow:
        """Change a team's columns (checked values, SCIM's too): its row."""
        before = await self.get_team(team_id)
        done = await self.store.update_team(team_id, values)
        if done is None:
            raise _no_team(team_id)
        row, changes = done
        await self._apply(changes)
        await self._record("team.update", "team", team_id, before, team_view(row))
        return row

    async def delete_team(self, team_id: int) -> None:
        row = await self.store.delete_team(team_id)
        if row is None:
            raise _no_team(team_id)
        await self._record("team.delete", "team", team_id, team_view(row), None)

    # -- users ---------------------------------------------------------------------------------
    async def create_user(self, spec: UserSpec) -> UserView:
        return user_view(await self.create_user_values(_user_columns(spec, only_set=False)))

    async def create_user_values(self, values: UserColumns) -> UserRow:
        """A new user of checked column values (SCIM's too): its row."""
        row = await self.store.create_user(values)
        await self._record("user.create", "user", row["id"], None, user_view(row))
        return row

    async def user_page(self, *, after: int | None = None, limit: int = 100,
                        search: str | None = None) -> Page[UserView]:
        rows = await self.store.user_page(after=after, limit=limit + 1, search=search)
        data = [user_view(r) for r in rows[:limit]]
        return _page(data, [v["id"] for v in data], len(rows) > limit)

    async def get_user(self, user_id: int) -> UserView:
        row = await self.store.user(user_id)
        if row is None:
            raise _no_user(user_id)
        return user_view(row)

    async def update_user(self, user_id: int, change: UserUpdate) -> UserView:
        """Change a user; disabling one stops all their keys on every gateway."""
        values = _user_columns(change, only_set=True)
        if not values:
            return await self.get_user(user_id)
        return user_view(await self.update_user_values(user_id, values))

    async def update_user_values(self, user_id: int, values: UserColumns, *,
                                 action: str | None = None) -> UserRow:
        """Change a user's columns (checked values, SCIM's too): its row. Disabling the
        user stops all their keys on every gateway."""
        before = await self.get_user(user_id)
        done = await self.store.update_user(user_id, values)
        if done is None:
            raise _no_user(user_id)
        row, changes = done
        await self._apply(changes)
        # disabling or enabling: the change of ``disabled`` (or all the change there is)
        if "disabled" in values and (values.keys() == {"disabled"}
                                     or bool(values["disabled"]) != before["disabled"]):
            action = action or ("user.disable" if values["disabled"] else "user.enable")
        action = action or "user.update"
        await self._record(action, "user", user_id, before, user_view(row))
        return row

    async def delete_user(self, user_id: int) -> None:
        row = await self.store.delete_user(user_id)
        if row is None:
            raise _no_user(user_id)
        await self._record("user.delete", "user", user_id, user_view(row), None)

    # -- membership ----------------------------------------------------------------------------
    async def members(self, team_id: int, *, after: int | None = None,
                      limit: int = 100) -> Page[MemberView]:
        await self.get_team(team_id)
        rows = await self.store.members(team_id, after=after, limit=limit + 1)
        data = [member_view(r) for r in rows[:limit]]
        return _page(data, [v["user_id"] for v in data], len(rows) > limit)

    async def set_member(self, team_id: int, user_id: int, spec: MemberSpec) -> MemberView:
        await self.get_team(team_id)
        await self.get_user(user_id)
        before, after = await self.store.set_member(team_id, user_id, spec.role)
        view = member_view(after)
        if before is None or before["role"] != after["role"]:
            await self._record("team.member.set", "team", team_id,
                               None if before is None else member_view(before), view)
        return view

    async def add_member(self, team_id: int, user_id: int) -> None:
        """Make a user a member of a team unless they are one already (in any role)."""
        if await self.store.member(team_id, user_id) is None:
            await self.set_member(team_id, user_id, MemberSpec())

    async def remove_member(self, team_id: int, user_id: int) -> None:
        before = await self.store.remove_member(team_id, user_id)
        if before is None:
            raise NotFound(f"The user {user_id} is no member of the team {team_id}.",
                           code="member_not_found")
        await self._record("team.member.remove", "team", team_id, member_view(before), None)

    # -- what keys may belong to ---------------------------------------------------------------
    async def check_key_links(self, team_id: int | None, user_id: int | None,
                              scope: str) -> tuple[str | None, str | None]:
        """The names of the team and user a key is to belong to; ``NotFound`` when either
        does not exist, ``Conflict`` when the user is no key-holding member of the team or
        the key's scope is above the user's role."""
        team = None if team_id is None else await self.get_team(team_id)
        user = None if user_id is None else await self.get_user(user_id)
        if team_id is not None and user_id is not None:
            member = await self.store.member(team_id, user_id)
            if member is None or member["role"] not in KEY_HOLDING_ROLES:
                raise Conflict(f"The user {user_id} is no owner or member of the team "
                               f"{team_id}: add them before giving them its keys.",
                               code="not_a_member")
        if user is not None and scope != "user" and not (
                user["role"] == "admin" or (user["role"] == "auditor" and scope == "auditor")):
            raise Conflict(f"The user {user_id} has no {scope} role: their keys may not have "
                           f"the {scope} scope.", code="role_too_low")
        return (None if team is None else team["name"], None if user is None else user["name"])
