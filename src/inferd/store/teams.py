"""Repository for teams, users and team membership (``teams``, ``users``, ``team_members``).

Keys belong to a team, a user or both (``api_keys.team_id``, ``user_id``), and a key's
principal is read with its team's and user's columns (``inferd.store.keys.KEYS``). So every
change of a team or a user appends a change of each of its keys to the key feed in its
transaction (``record_changes``, one statement): every gateway reloads those keys, and a
disabled user's keys stop working as soon as the feed is read (or at once, when the change is
announced).

A change of a user takes part in the key store's rule that an admin key must remain
(``KeepAnAdmin``): disabling the user of the last usable admin key, or taking the admin role
from that user, is refused with ``Conflict``.

A team or a user that still has keys cannot be deleted (``Conflict``): the keys would lose
the limits set on their team or user. Nor can a user who holds keys in a team leave it, or be
made a viewer there (viewers hold no keys of a team).
"""

from __future__ import annotations

import time
from typing import Any, Literal, TypedDict

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from inferd.errors import Conflict
from inferd.store.db import Database
from inferd.store.keys import BudgetPeriod, KeepAnAdmin, record_changes
from inferd.store.scim import ScimKept
from inferd.store.tables_control import api_keys, team_members, teams, users

Change = tuple[int, str]  # (key id, key hash) of a key whose change is in the key feed

TEAM_COLUMNS = frozenset({"name", "models", "rpm", "tpm", "token_budget", "budget_period",
                          "max_budget", "budget_alert", "extra", "external_id",
                          "queue_weight"})
USER_COLUMNS = frozenset({"name", "email", "role", "disabled", "rpm", "tpm", "token_budget",
                          "budget_period", "max_budget", "budget_alert", "external_id",
                          "display_name", "scim", "deprovisioned_at", "sso_issuer",
                          "sso_subject"})
# Member roles that may hold keys of the team.
KEY_HOLDING_ROLES = ("owner", "member")
# A user's installation role (null: none), and a member's role in a team.
UserRole = Literal["admin", "auditor"]
MemberRole = Literal["owner", "member", "viewer"]


class LimitColumns(TypedDict, total=False):
    """The limits a team and a user set alike."""

    rpm: int | None
    tpm: int | None
    token_budget: int | None
    budget_period: BudgetPeriod | None
    max_budget: float | None
    budget_alert: int | None


class TeamColumns(LimitColumns, total=False):
    """The columns of a team a caller sets (``TEAM_COLUMNS``): on create, those left out
    take their defaults; on update, only those given change."""

    name: str
    models: list[str] | None  # null: every model
    extra: dict[str, str] | None  # the API's ``metadata``
    external_id: str | None
    queue_weight: float | None


class TeamRow(TypedDict):
    """A row of ``teams``."""

    id: int
    name: str
    models: list[str] | None
    rpm: int | None
    tpm: int | None
    token_budget: int | None
    budget_period: BudgetPeriod | None
    max_budget: float | None
    budget_alert: int | None
    extra: dict[str, str] | None
    created_at: float
    updated_at: float
    external_id: str | None
    queue_weight: float | None


class UserColumns(LimitColumns, total=False):
    """The columns of a user a caller sets (``USER_COLUMNS``), as ``TeamColumns``."""

    name: str
    email: str | None
    role: UserRole | None
    disabled: bool
    external_id: str | None
    display_name: str | None
    scim: ScimKept | None  # the SCIM attributes kept as given
    deprovisioned_at: float | None
    sso_issuer: str | None
    sso_subject: str | None


class UserRow(TypedDict):
    """A row of ``users``."""

    id: int
    name: str
    email: str | None
    role: UserRole | None
    disabled: bool
    rpm: int | None
    tpm: int | None
    token_budget: int | None
    budget_period: BudgetPeriod | None
    max_budget: float | None
    budget_alert: int | None
    created_at: float
    updated_at: float
    sso_issuer: str | None
    sso_subject: str | None
    external_id: str | None
    display_name: str | None
    scim: ScimKept | None
    deprovisioned_at: float | None


class MemberRow(TypedDict):
    """A row of ``team_members`` with its user's name and email."""

    team_id: int
    user_id: int
    role: MemberRole
    created_at: float
    name: str
    email: str | None


def team_row(row: sa.Row[Any]) -> TeamRow:
    return TeamRow(id=row.id, name=row.name, models=row.models, rpm=row.rpm, tpm=row.tpm,
                   token_budget=row.token_budget, budget_period=row.budget_period,
                   max_budget=row.max_budget, budget_alert=row.budget_alert, extra=row.extra,
                   created_at=row.created_at, updated_at=row.updated_at,
                   external_id=row.external_id, queue_weight=row.queue_weight)


def user_row(row: sa.Row[Any]) -> UserRow:
    return UserRow(id=row.id, name=row.name, email=row.email, role=row.role,
                   disabled=row.disabled, rpm=row.rpm, tpm=row.tpm,
                   token_budget=row.token_budget, budget_period=row.budget_period,
                   max_budget=row.max_budget, budget_alert=row.budget_alert,
                   created_at=row.created_at, updated_at=row.updated_at,
                   sso_issuer=row.sso_issuer, sso_subject=row.sso_subject,
                   external_id=row.external_id, display_name=row.display_name,
                   scim=row.scim, deprovisioned_at=row.deprovisioned_at)


def member_row(row: sa.Row[Any]) -> MemberRow:
    return MemberRow(team_id=row.team_id, user_id=row.user_id, role=row.role,
                     created_at=row.created_at, name=row.name, email=row.email)


class _Missing(Exception):
    """Rolls back a change of a row that does not exist."""


def _duplicate(kind: str, values: TeamColumns | UserColumns) -> Conflict:
    """Names and external ids (``inferd.auth.scim``) are unique."""
    name, external = values.get("name"), values.get("external_id")
    if external is not None:
        what = (f"the external id '{external}'" if name is None else
                f"the name '{name}' or the external id '{external}'")
        return Conflict(f"A {kind} with {what} exists already.", code=f"{kind}_exists")
    return Conflict(f"A {kind} named '{name}' exists already.", code=f"{kind}_exists")


class TeamStore:
    """Create, read, update and delete teams, users and memberships."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- teams and users alike ---------------------------------------------------------------
    async def _create(self, table: sa.Table, kind: str,
                      values: TeamColumns | UserColumns) -> sa.Row[Any]:
        now = time.time()
        try:
            async with self.db.engine.begin() as conn:
                result = await conn.execute(sa.insert(table).values(
                    **values, created_at=now, updated_at=now))
                new_id = result.inserted_primary_key[0] if result.inserted_primary_key else None
                row = (await conn.execute(sa.select(table).where(table.c.id == new_id))).one()
        except sa.exc.IntegrityError:
            raise _duplicate(kind, values) from None
        return row

    async def _get(self, table: sa.Table, row_id: int) -> sa.Row[Any] | None:
        async with self.db.engine.connect() as conn:
            return (await conn.execute(sa.select(table).where(table.c.id == row_id))).first()

    async def _page(self, table: sa.Table, *, after: int | None, limit: int,
                    search: str | None, extra: tuple[sa.ColumnElement[Any], ...] = (),
                    where: tuple[sa.ColumnElement[bool], ...] = ()) -> list[sa.Row[Any]]:
        query = sa.select(table).where(*where).order_by(table.c.id).limit(limit)
        if after is not None:
            query = query.where(table.c.id > after)
        if search:
            query = query.where(sa.or_(*(
                sa.func.lower(column).contains(search.lower(), autoescape=True)
                for column in (table.c.name, *extra))))
        async with self.db.engine.connect() as conn:
            return list(await conn.execute(query))

    async def _update(self, table: sa.Table, kind: str, row_id: int,
                      values: TeamColumns | UserColumns, key_column: sa.Column[Any], label: str,
                      ) -> tuple[sa.Row[Any], list[Change]] | None:
        """Change a team or user; its keys' changes in the feed (every key: its principal
        is read with these columns). ``label``: the keys' text column that shows the name."""
        try:
            async with self.db.engine.begin() as conn:
                async with KeepAnAdmin(conn):
                    result = await conn.execute(sa.update(table).where(table.c.id == row_id)
                                                .values(**values, updated_at=time.time()))
                    if not result.rowcount:
                        raise _Missing
                    if "name" in values:
                        await conn.execute(sa.update(api_keys).where(key_column == row_id)
                                           .values({label: values["name"]}))
                changes = await record_changes(conn, key_column == row_id)
                row = (await conn.execute(sa.select(table).where(table.c.id == row_id))).one()
        except _Missing:
            return None
        except sa.exc.IntegrityError:
            raise _duplicate(kind, values) from None
        return row, changes

    async def _delete(self, table: sa.Table, kind: str, row_id: int,
                      key_column: sa.Column[Any]) -> sa.Row[Any] | None:
        async with self.db.engine.begin() as conn:
            row = (await conn.execute(sa.select(table).where(table.c.id == row_id)
                                      .with_for_update())).first()
            if row is None:
                return None
            keys = (await conn.execute(sa.select(sa.func.count()).select_from(api_keys)
                                       .where(key_column == row_id))).scalar()
            if keys:
                raise Conflict(f"The {kind} '{row.name}' still has {keys} API key(s): "
                               "delete them or move them first.", code=f"{kind}_has_keys")
            column = team_members.c.team_id if kind == "team" else team_members.c.user_id
            await conn.execute(sa.delete(team_members).where(column == row_id))
            await conn.execute(sa.delete(table).where(table.c.id == row_id))
        return row

    # -- teams ---------------------------------------------------------------------------------
    async def create_team(self, values: TeamColumns) -> TeamRow:
        return team_row(await self._create(teams, "team", values))

    async def team(self, team_id: int) -> TeamRow | None:
        row = await self._get(teams, team_id)
        return None if row is None else team_row(row)

    async def team_page(self, *, after: int | None = None, limit: int = 100,
                        search: str | None = None) -> list[TeamRow]:
        """Up to ``limit`` teams by id after ``after``; ``search``: anywhere in the name."""
        return [team_row(r) for r in
                await self._page(teams, after=after, limit=limit, search=search)]

    async def update_team(self, team_id: int, values: TeamColumns,
                          ) -> tuple[TeamRow, list[Change]] | None:
        done = await self._update(teams, "team", team_id, values, api_keys.c.team_id, "team")
        return None if done is None else (team_row(done[0]), done[1])

    async def delete_team(self, team_id: int) -> TeamRow | None:
        row = await self._delete(teams, "team", team_id, api_keys.c.team_id)
        return None if row is None else team_row(row)

    # -- users ---------------------------------------------------------------------------------
    async def create_user(self, values: UserColumns) -> UserRow:
        return user_row(await self._create(users, "user", values))

    async def user(self, user_id: int) -> UserRow | None:
        row = await self._get(users, user_id)
        return None if row is None else user_row(row)

    async def user_page(self, *, after: int | None = None, limit: int = 100,
                        search: str | None = None,
                        team_id: int | None = None) -> list[UserRow]:
        """Up to ``limit`` users by id after ``after``; ``search``: anywhere in the name or
        email; ``team_id``: only that team's members."""
        where = () if team_id is None else (users.c.id.in_(
            sa.select(team_members.c.user_id).where(team_members.c.team_id == team_id)),)
        return [user_row(r) for r in await self._page(users, after=after, limit=limit,
                                                   search=search, extra=(users.c.email,),
                                                   where=where)]

    async def update_user(self, user_id: int, values: UserColumns,
                          ) -> tuple[UserRow, list[Change]] | None:
        done = await self._update(users, "user", user_id, values, api_keys.c.user_id, "owner")
        return None if done is None else (user_row(done[0]), done[1])

    async def delete_user(self, user_id: int) -> UserRow | None:
        row = await self._delete(users, "user", user_id, api_keys.c.user_id)
        return None if row is None else user_row(row)

    # -- membership ----------------------------------------------------------------------------
    async def members(self, team_id: int, *, after: int | None = None,
                      limit: int = 100) -> list[MemberRow]:
        """Up to ``limit`` members of a team by user id after ``after``, with the user's
        name and email."""
        query = (sa.select(team_members, users.c.name, users.c.email)
                 .join(users, users.c.id == team_members.c.user_id)
                 .where(team_members.c.team_id == team_id)
                 .order_by(team_members.c.user_id).limit(limit))
        if after is not None:
            query = query.where(team_members.c.user_id > after)
        async with self.db.engine.connect() as conn:
            return [member_row(r) for r in await conn.execute(query)]

    async def member(self, team_id: int, user_id: int) -> MemberRow | None:
        async with self.db.engine.connect() as conn:
            return await self._member(conn, team_id, user_id)

    @staticmethod
    def _membership(team_id: int, user_id: int) -> sa.Select[Any]:
        return (sa.select(team_members, users.c.name, users.c.email)
                .join(users, users.c.id == team_members.c.user_id)
                .where(team_members.c.team_id == team_id, team_members.c.user_id == user_id))

    async def _member(self, conn: AsyncConnection, team_id: int,
                      user_id: int) -> MemberRow | None:
        row = (await conn.execute(self._membership(team_id, user_id))).first()
        return None if row is None else member_row(row)

    async def _holds_keys(self, conn: AsyncConnection, team_id: int, user_id: int) -> int:
        return int((await conn.execute(
            sa.select(sa.func.count()).select_from(api_keys)
            .where(api_keys.c.team_id == team_id, api_keys.c.user_id == user_id))).scalar()
            or 0)

    async def set_member(self, team_id: int, user_id: int,
                         role: MemberRole) -> tuple[MemberRow | None, MemberRow]:
        """Add a user to a team or change their role: (before, after). ``Conflict`` when the
        team or the user was deleted meanwhile."""
        try:
            return await self._set_member(team_id, user_id, role)
        except sa.exc.IntegrityError:
            raise Conflict("The team or the user no longer exists.",
                           code="member_not_added") from None

    async def _set_member(self, team_id: int, user_id: int,
                          role: MemberRole) -> tuple[MemberRow | None, MemberRow]:
        async with self.db.engine.begin() as conn:
            before = await self._member(conn, team_id, user_id)
            if before is None:
                await conn.execute(sa.insert(team_members).values(
                    team_id=team_id, user_id=user_id, role=role, created_at=time.time()))
            else:
                if role not in KEY_HOLDING_ROLES:
                    self._refuse_keys(await self._holds_keys(conn, team_id, user_id))
                await conn.execute(sa.update(team_members).values(role=role).where(
                    team_members.c.team_id == team_id, team_members.c.user_id == user_id))
            after = (await conn.execute(self._membership(team_id, user_id))).one()
        return before, member_row(after)

    async def remove_member(self, team_id: int, user_id: int) -> MemberRow | None:
        """Take a user out of a team: the membership it was, or ``None`` when there was none."""
        async with self.db.engine.begin() as conn:
            before = await self._member(conn, team_id, user_id)
            if before is None:
                return None
            self._refuse_keys(await self._holds_keys(conn, team_id, user_id))
            await conn.execute(sa.delete(team_members).where(
                team_members.c.team_id == team_id, team_members.c.user_id == user_id))
        return before

    @staticmethod
    def _refuse_keys(count: int) -> None:
        if count:
            raise Conflict(f"The user holds {count} API key(s) of this team: delete them or "
                           "move them first.", code="member_has_keys")
