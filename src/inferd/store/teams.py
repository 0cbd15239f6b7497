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
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from inferd.errors import Conflict
from inferd.store.db import Database
from inferd.store.keys import KeepAnAdmin, record_changes
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


def _row(row: sa.Row[Any] | None) -> dict[str, Any] | None:
    return None if row is None else {str(k): v for k, v in row._mapping.items()}


class _Missing(Exception):
    """Rolls back a change of a row that does not exist."""


def _duplicate(kind: str, values: dict[str, Any]) -> Conflict:
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
                      values: dict[str, Any]) -> dict[str, Any]:
        now = time.time()
        try:
            async with self.db.engine.begin() as conn:
                result = await conn.execute(sa.insert(table).values(
                    **values, created_at=now, updated_at=now))
                new_id = result.inserted_primary_key[0] if result.inserted_primary_key else None
                row = (await conn.execute(sa.select(table).where(table.c.id == new_id))).one()
        except sa.exc.IntegrityError:
            raise _duplicate(kind, values) from None
        return dict(_row(row) or {})

    async def _get(self, table: sa.Table, row_id: int) -> dict[str, Any] | None:
        async with self.db.engine.connect() as conn:
            return _row((await conn.execute(sa.select(table).where(table.c.id == row_id)))
                        .first())

    async def _page(self, table: sa.Table, *, after: int | None, limit: int,
                    search: str | None, extra: tuple[sa.ColumnElement[Any], ...] = (),
                    where: tuple[sa.ColumnElement[bool], ...] = ()) -> list[dict[str, Any]]:
        query = sa.select(table).where(*where).order_by(table.c.id).limit(limit)
        if after is not None:
            query = query.where(table.c.id > after)
        if search:
            query = query.where(sa.or_(*(
                sa.func.lower(column).contains(search.lower(), autoescape=True)
                for column in (table.c.name, *extra))))
        async with self.db.engine.connect() as conn:
            return [dict(_row(r) or {}) for r in await conn.execute(query)]

    async def _update(self, table: sa.Table, kind: str, row_id: int, values: dict[str, Any],
                      key_column: sa.Column[Any], label: str,
                      ) -> tuple[dict[str, Any], list[Change]] | None:
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
        return dict(_row(row) or {}), changes

    async def _delete(self, table: sa.Table, kind: str, row_id: int,
                      key_column: sa.Column[Any]) -> dict[str, Any] | None:
        async with self.db.engine.begin() as conn:
            row = _row((await conn.execute(sa.select(table).where(table.c.id == row_id)
                                           .with_for_update())).first())
            if row is None:
                return None
            keys = (await conn.execute(sa.select(sa.func.count()).select_from(api_keys)
                                       .where(key_column == row_id))).scalar()
            if keys:
                raise Conflict(f"The {kind} '{row['name']}' still has {keys} API key(s): "
                               "delete them or move them first.", code=f"{kind}_has_keys")
            column = team_members.c.team_id if kind == "team" else team_members.c.user_id
            await conn.execute(sa.delete(team_members).where(column == row_id))
            await conn.execute(sa.delete(table).where(table.c.id == row_id))
        return row

    # -- teams ---------------------------------------------------------------------------------
    async def create_team(self, values: dict[str, Any]) -> dict[str, Any]:
        return await self._create(teams, "team", values)

    async def team(self, team_id: int) -> dict[str, Any] | None:
        return await self._get(teams, team_id)

    async def team_page(self, *, after: int | None = None, limit: int = 100,
                        search: str | None = None) -> list[dict[str, Any]]:
        """Up to ``limit`` teams by id after ``after``; ``search``: anywhere in the name."""
        return await self._page(teams, after=after, limit=limit, search=search)

    async def update_team(self, team_id: int, values: dict[str, Any],
                          ) -> tuple[dict[str, Any], list[Change]] | None:
        return await self._update(teams, "team", team_id, values, api_keys.c.team_id, "team")

    async def delete_team(self, team_id: int) -> dict[str, Any] | None:
        return await self._delete(teams, "team", team_id, api_keys.c.team_id)

    # -- users ---------------------------------------------------------------------------------
    async def create_user(self, values: dict[str, Any]) -> dict[str, Any]:
        return await self._create(users, "user", values)

    async def user(self, user_id: int) -> dict[str, Any] | None:
        return await self._get(users, user_id)

    async def user_page(self, *, after: int | None = None, limit: int = 100,
                        search: str | None = None,
                        team_id: int | None = None) -> list[dict[str, Any]]:
        """Up to ``limit`` users by id after ``after``; ``search``: anywhere in the name or
        email; ``team_id``: only that team's members."""
        where = () if team_id is None else (users.c.id.in_(
            sa.select(team_members.c.user_id).where(team_members.c.team_id == team_id)),)
        return await self._page(users, after=after, limit=limit, search=search,
                                extra=(users.c.email,), where=where)

    async def update_user(self, user_id: int, values: dict[str, Any],
                          ) -> tuple[dict[str, Any], list[Change]] | None:
        return await self._update(users, "user", user_id, values, api_keys.c.user_id, "owner")

    async def delete_user(self, user_id: int) -> dict[str, Any] | None:
        return await self._delete(users, "user", user_id, api_keys.c.user_id)

    # -- membership ----------------------------------------------------------------------------
    async def members(self, team_id: int, *, after: int | None = None,
                      limit: int = 100) -> list[dict[str, Any]]:
        """Up to ``limit`` members of a team by user id after ``after``, with the user's
        name and email."""
        query = (sa.select(team_members, users.c.name, users.c.email)
                 .join(users, users.c.id == team_members.c.user_id)
                 .where(team_members.c.team_id == team_id)
                 .order_by(team_members.c.user_id).limit(limit))
        if after is not None:
            query = query.where(team_members.c.user_id > after)
        async with self.db.engine.connect() as conn:
            return [dict(_row(r) or {}) for r in await conn.execute(query)]

    async def member(self, team_id: int, user_id: int) -> dict[str, Any] | None:
        async with self.db.engine.connect() as conn:
            return await self._member(conn, team_id, user_id)

    @staticmethod
    async def _member(conn: AsyncConnection, team_id: int,
                      user_id: int) -> dict[str, Any] | None:
        return _row((await conn.execute(
            sa.select(team_members, users.c.name, users.c.email)
            .join(users, users.c.id == team_members.c.user_id)
            .where(team_members.c.team_id == team_id,
                   team_members.c.user_id == user_id))).first())

    async def _holds_keys(self, conn: AsyncConnection, team_id: int, user_id: int) -> int:
        return int((await conn.execute(
            sa.select(sa.func.count()).select_from(api_keys)
            .where(api_keys.c.team_id == team_id, api_keys.c.user_id == user_id))).scalar()
            or 0)

    async def set_member(self, team_id: int, user_id: int,
                         role: str) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        """Add a user to a team or change their role: (before, after). ``Conflict`` when the
        team or the user was deleted meanwhile."""
        try:
            return await self._set_member(team_id, user_id, role)
        except sa.exc.IntegrityError:
            raise Conflict("The team or the user no longer exists.",
                           code="member_not_added") from None

    async def _set_member(self, team_id: int, user_id: int,
                          role: str) -> tuple[dict[str, Any] | None, dict[str, Any]]:
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
            after = await self._member(conn, team_id, user_id)
        return before, dict(after or {})

    async def remove_member(self, team_id: int, user_id: int) -> dict[str, Any] | None:
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
