"""Reads of SCIM provisioning (``inferd.auth.scim``): users and teams by id, pages of them by
offset with an equality filter and their total, and team members' ids. Writes go through
``TeamStore`` (``inferd.auth.teams.TeamAdmin``). Users a SCIM ``DELETE`` took out
(``deprovisioned_at`` set) are not seen here: not as users, nor as members.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NotRequired, TypedDict, TypeVar

import sqlalchemy as sa

from inferd.store.db import Database
from inferd.store.tables_control import api_keys, team_members, teams, users

# (column, value, case-exact): a filter ``column = value``
Where = tuple[str, str, bool] | None
# (On MySQL and MariaDB an external id is unique compared without case, as their default
# collations compare; a filter on it still compares exactly.)
_SEEN = users.c.deprovisioned_at.is_(None)
Row = TypeVar("Row")


class ScimName(TypedDict, total=False):
    """A SCIM User's ``name``: the parts inferd keeps, as the provider gave them."""

    formatted: str
    familyName: str
    givenName: str


class ScimEmail(TypedDict):
    """One of a SCIM User's ``emails``."""

    value: str
    type: NotRequired[str]
    primary: NotRequired[bool]


class ScimKept(TypedDict, total=False):
    """A user's ``scim`` column: the SCIM attributes kept as the provider gave them;
    ``active`` is there (true) when the provider set it."""

    name: ScimName
    emails: list[ScimEmail]
    active: bool


class ScimUserRow(TypedDict):
    """The columns of a user SCIM reads."""

    id: int
    name: str
    email: str | None
    disabled: bool
    external_id: str | None
    display_name: str | None
    scim: ScimKept | None
    created_at: float
    updated_at: float


class ScimTeamRow(TypedDict):
    """The columns of a team SCIM reads."""

    id: int
    name: str
    external_id: str | None
    created_at: float
    updated_at: float


def _user(row: sa.RowMapping) -> ScimUserRow:
    return {"id": row["id"], "name": row["name"], "email": row["email"],
            "disabled": row["disabled"], "external_id": row["external_id"],
            "display_name": row["display_name"], "scim": row["scim"],
            "created_at": row["created_at"], "updated_at": row["updated_at"]}


def _team(row: sa.RowMapping) -> ScimTeamRow:
    return {"id": row["id"], "name": row["name"], "external_id": row["external_id"],
            "created_at": row["created_at"], "updated_at": row["updated_at"]}


class ScimStore:
    """What SCIM reads of users, teams and membership."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def _one(self, query: sa.Select[Any],
                   row: Callable[[sa.RowMapping], Row]) -> Row | None:
        async with self.db.engine.connect() as conn:
            found = (await conn.execute(query)).mappings().first()
        return None if found is None else row(found)

    async def _page(self, table: sa.Table, row: Callable[[sa.RowMapping], Row], where: Where,
                    offset: int, limit: int,
                    *seen: sa.ColumnElement[bool]) -> tuple[int, list[Row]]:
        conditions = list(seen)
        if where is not None:
            column_name, value, exact = where
            column = table.c[column_name]
            if column_name == "id":
                conditions.append(column == (int(value) if value.isascii() and value.isdigit()
                                             and len(value) <= 18 else -1))
            elif exact:
                conditions.append(column == value)
                if self.db.engine.dialect.name in ("mysql", "mariadb"):
                    # its default collations compare without case: compare the bytes too
                    conditions.append(sa.func.binary(column) == value)
            else:
                conditions.append(sa.func.lower(column) == value.lower())
        async with self.db.engine.connect() as conn:
            total = (await conn.execute(sa.select(sa.func.count()).select_from(table)
                                        .where(*conditions))).scalar() or 0
            rows = [] if limit <= 0 else [row(r) for r in (await conn.execute(
                sa.select(table).where(*conditions).order_by(table.c.id)
                .offset(offset).limit(limit))).mappings()]
        return int(total), rows

    # -- users -------------------------------------------------------------------------------
    async def user(self, user_id: int) -> ScimUserRow | None:
        return await self._one(sa.select(users).where(users.c.id == user_id, _SEEN), _user)

    async def user_page(self, where: Where, offset: int,
                        limit: int) -> tuple[int, list[ScimUserRow]]:
        """The number of users ``where`` matches, and ``limit`` of them by id from
        ``offset``."""
        return await self._page(users, _user, where, offset, limit, _SEEN)

    async def named(self, kind: str, name: str) -> int | None:
        """The id of the user (``kind`` "user") or team whose name is ``name`` compared
        without case (SCIM's ``userName`` and ``displayName`` are not case-exact), among all
        of them."""
        table = users if kind == "user" else teams
        async with self.db.engine.connect() as conn:
            found = (await conn.execute(sa.select(table.c.id).where(
                sa.func.lower(table.c.name) == name.lower()).limit(1))).scalar()
        return None if found is None else int(found)

    async def missing_users(self, user_ids: list[int]) -> list[int]:
        """Those of ``user_ids`` that name no user SCIM sees."""
        if not user_ids:
            return []
        async with self.db.engine.connect() as conn:
            found = {int(r[0]) for r in await conn.execute(
                sa.select(users.c.id).where(users.c.id.in_(user_ids), _SEEN))}
        return [u for u in user_ids if u not in found]

    # -- teams -------------------------------------------------------------------------------
    async def team(self, team_id: int) -> ScimTeamRow | None:
        return await self._one(sa.select(teams).where(teams.c.id == team_id), _team)

    async def team_page(self, where: Where, offset: int,
                        limit: int) -> tuple[int, list[ScimTeamRow]]:
        return await self._page(teams, _team, where, offset, limit)

    async def member_ids(self, team_id: int) -> list[int]:
        return (await self.members_of([team_id])).get(team_id, [])

    async def key_holders(self, team_id: int, user_ids: list[int]) -> list[int]:
        """Those of ``user_ids`` who hold keys of the team (they cannot leave it)."""
        if not user_ids:
            return []
        async with self.db.engine.connect() as conn:
            return sorted({int(r[0]) for r in await conn.execute(
                sa.select(api_keys.c.user_id).where(api_keys.c.team_id == team_id,
                                                    api_keys.c.user_id.in_(user_ids)))})

    async def members_of(self, team_ids: list[int]) -> dict[int, list[int]]:
        """The ids of the members of each of ``team_ids``, ascending."""
        if not team_ids:
            return {}
        query = (sa.select(team_members.c.team_id, team_members.c.user_id)
                 .join(users, users.c.id == team_members.c.user_id)
                 .where(team_members.c.team_id.in_(team_ids), _SEEN)
                 .order_by(team_members.c.team_id, team_members.c.user_id))
        out: dict[int, list[int]] = {}
        async with self.db.engine.connect() as conn:
            for team_id, user_id in await conn.execute(query):
                out.setdefault(int(team_id), []).append(int(user_id))
        return out
