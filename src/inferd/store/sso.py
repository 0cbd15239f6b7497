"""Repository for single sign-on (``inferd.auth.sso``): users by their OpenID Connect
identity, the teams the group rules name, a user's memberships and the keys single sign-on
made for a user (by their names, ``SSO_KEY_NAMES``)."""

from __future__ import annotations

from typing import TypedDict

import sqlalchemy as sa

from inferd.store.db import Database
from inferd.store.tables_control import api_keys, team_members, teams, users
from inferd.store.teams import UserRow, user_row


class SsoUser(TypedDict):
    """The columns of a user single sign-on reads."""

    id: int
    name: str
    email: str | None
    role: str | None
    disabled: bool


class SsoKey(TypedDict):
    """The columns of a key single sign-on made that it reads."""

    id: int
    name: str
    scope: str
    team_id: int | None
    expires_at: float | None
    enabled: bool


def sso_user(row: UserRow) -> SsoUser:
    """The columns single sign-on reads of a user's row (all its columns, as ``TeamStore``
    answers it)."""
    return {"id": row["id"], "name": row["name"], "email": row["email"], "role": row["role"],
            "disabled": row["disabled"]}


class SsoStore:
    """Reads for single sign-on; the changes go through ``TeamStore`` and ``KeyStore``."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def user_by_identity(self, issuer: str, subject: str) -> SsoUser | None:
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(sa.select(users).where(
                users.c.sso_issuer == issuer, users.c.sso_subject == subject))).first()
        return None if row is None else sso_user(user_row(row))

    async def provisioned_users(self, names: list[str]) -> list[SsoUser]:
        """Users an identity provider provisioned over SCIM (an ``external_id``) who have no
        single sign-on identity yet, whose name or email is one of ``names`` (compared
        without case)."""
        wanted = sorted({n.lower() for n in names if n})
        if not wanted:
            return []
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(sa.select(users).where(
                users.c.external_id.is_not(None), users.c.sso_subject.is_(None),
                sa.or_(sa.func.lower(users.c.name).in_(wanted),
                       sa.func.lower(users.c.email).in_(wanted))).limit(2))).all()
        return [sso_user(user_row(row)) for row in rows]

    async def team_ids(self, names: list[str]) -> dict[str, int]:
        """The ids of the teams of these names that exist."""
        if not names:
            return {}
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(sa.select(teams.c.name, teams.c.id)
                                       .where(teams.c.name.in_(names)))).all()
        return {str(name): int(team_id) for name, team_id in rows}

    async def memberships(self, user_id: int) -> dict[int, str]:
        """The user's teams: team id -> role."""
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(sa.select(team_members.c.team_id, team_members.c.role)
                                       .where(team_members.c.user_id == user_id))).all()
        return {int(team_id): str(role) for team_id, role in rows}

    async def keys_named(self, user_id: int, names: tuple[str, ...]) -> list[SsoKey]:
        """The user's keys of these names, oldest first."""
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(
                sa.select(api_keys.c.id, api_keys.c.name, api_keys.c.scope, api_keys.c.team_id,
                          api_keys.c.expires_at, api_keys.c.enabled)
                .where(api_keys.c.user_id == user_id, api_keys.c.name.in_(names))
                .order_by(api_keys.c.id))).all()
        return [_key(row._mapping) for row in rows]


def _key(row: sa.RowMapping) -> SsoKey:
    return {"id": row["id"], "name": row["name"], "scope": row["scope"],
            "team_id": row["team_id"], "expires_at": row["expires_at"],
            "enabled": row["enabled"]}
