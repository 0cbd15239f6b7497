"""Repository for API keys (``api_keys``) and the version counter gateways poll.

Every change to a key also writes a new random value under ``keys.version`` in the ``kv``
table, in the same transaction; gateways compare that one value every few seconds and reload
their in-memory key cache only when it changed.

A change that would leave no usable admin key (the last enabled, unexpired one deleted,
disabled, expired or made a user key) is refused with ``Conflict``: nobody could manage keys
afterwards. The check runs in the changing transaction, after it has written the version row
and locked the admin rows, so two concurrent changes cannot each leave the other one last.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from inferd.errors import Conflict
from inferd.store.db import Database
from inferd.store.tables import kv
from inferd.store.tables_control import api_keys, usage_records

VERSION_KEY = "keys.version"

# Columns a caller may set on create or update (everything but ids, hashes and times).
EDITABLE = frozenset({"name", "owner", "team", "scope", "models", "rpm", "tpm", "ipm",
                      "upm", "image_budget", "storage_bytes", "storage_objects",
                      "token_budget", "budget_period", "expires_at", "enabled", "extra"})


async def _bump_version(conn: AsyncConnection) -> None:
    value = uuid.uuid4().hex
    now = time.time()
    updated = await conn.execute(
        sa.update(kv).where(kv.c.key == VERSION_KEY).values(value=value, updated_at=now))
    if updated.rowcount == 0:
        try:
            async with conn.begin_nested():
                await conn.execute(sa.insert(kv).values(key=VERSION_KEY, value=value,
                                                        updated_at=now))
        except sa.exc.IntegrityError:
            await conn.execute(sa.update(kv).where(kv.c.key == VERSION_KEY)
                               .values(value=value, updated_at=now))


async def _usable_admins(conn: AsyncConnection) -> int:
    """Enabled, unexpired admin keys, read with row locks (up to date inside a transaction)."""
    now = time.time()
    rows = await conn.execute(
        sa.select(api_keys.c.id).where(
            api_keys.c.scope == "admin", api_keys.c.enabled.is_(True),
            sa.or_(api_keys.c.expires_at.is_(None), api_keys.c.expires_at > now))
        .with_for_update())
    return len(rows.all())


class _NoSuchKey(Exception):
    """Rolls back a change to a key that does not exist."""


class _KeepAnAdmin:
    """Wraps a key change: refuses it (``Conflict``, rolled back) when it would remove the
    last usable admin key. Entered inside the change's transaction."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        self.before = 0

    async def __aenter__(self) -> _KeepAnAdmin:
        # The version row is written first: every key change updates that one row, so on
        # PostgreSQL and MariaDB concurrent changes queue behind each other here, and on
        # SQLite the write lock is taken before anything is read.
        await _bump_version(self.conn)
        self.before = await _usable_admins(self.conn)
        return self

    async def __aexit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is None and self.before > 0 and await _usable_admins(self.conn) == 0:
            raise Conflict("This is the last enabled admin key: create another admin key "
                           "before deleting, disabling or demoting it.", code="last_admin_key")


class KeyStore:
    """Create, read, update and delete API key rows (``webhook_secret`` is stored encrypted:
    ``Database.secrets``)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def _row(self, row: sa.Row[Any]) -> dict[str, Any]:
        values = {str(k): v for k, v in row._mapping.items()}
        if values.get("webhook_secret"):
            values["webhook_secret"] = self.db.secrets.open(values["webhook_secret"])
        return values

    async def version(self) -> str | None:
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(sa.select(kv.c.value)
                                      .where(kv.c.key == VERSION_KEY))).first()
        return None if row is None else str(row[0])

    async def create(self, values: dict[str, Any]) -> dict[str, Any]:
        """Insert a key (``values`` holds ``key_hash``, ``prefix``, ``webhook_secret`` too)."""
        now = time.time()
        async with self.db.engine.begin() as conn:
            await _bump_version(conn)  # first, like every key change (see ``_KeepAnAdmin``)
            if values.get("webhook_secret"):
                values = {**values,
                          "webhook_secret": self.db.secrets.seal(values["webhook_secret"])}
            result = await conn.execute(
                sa.insert(api_keys).values(**values, created_at=now, updated_at=now))
            key_id = result.inserted_primary_key[0] if result.inserted_primary_key else None
            row = (await conn.execute(sa.select(api_keys)
                                      .where(api_keys.c.id == key_id))).one()
        return self._row(row)

    async def all(self) -> list[dict[str, Any]]:
        async with self.db.engine.connect() as conn:
            rows = await conn.execute(sa.select(api_keys).order_by(api_keys.c.id))
            return [self._row(r) for r in rows]

    async def list(self, *, owner: str | None = None, limit: int = 100,
                   offset: int = 0) -> list[dict[str, Any]]:
        query = sa.select(api_keys).order_by(api_keys.c.id).limit(limit).offset(offset)
        if owner is not None:
            query = query.where(api_keys.c.owner == owner)
        async with self.db.engine.connect() as conn:
            return [self._row(r) for r in await conn.execute(query)]

    async def get(self, key_id: int) -> dict[str, Any] | None:
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(sa.select(api_keys)
                                      .where(api_keys.c.id == key_id))).first()
        return None if row is None else self._row(row)

    async def find_by_name(self, name: str) -> dict[str, Any] | None:
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(sa.select(api_keys).where(api_keys.c.name == name)
                                      .order_by(api_keys.c.id).limit(1))).first()
        return None if row is None else self._row(row)

    async def update(self, key_id: int, values: dict[str, Any]) -> dict[str, Any] | None:
        """Change some columns; ``None`` when the key does not exist."""
        try:
            async with self.db.engine.begin() as conn:
                async with _KeepAnAdmin(conn):
                    await conn.execute(sa.update(api_keys).where(api_keys.c.id == key_id)
                                       .values(**values, updated_at=time.time()))
                row = (await conn.execute(sa.select(api_keys)
                                          .where(api_keys.c.id == key_id))).first()
                if row is None:
                    raise _NoSuchKey  # rolls the version change back
        except _NoSuchKey:
            return None
        return self._row(row)

    async def delete(self, key_id: int) -> bool:
        try:
            async with self.db.engine.begin() as conn:
                async with _KeepAnAdmin(conn):
                    result = await conn.execute(sa.delete(api_keys)
                                                .where(api_keys.c.id == key_id))
                if not result.rowcount:
                    raise _NoSuchKey
        except _NoSuchKey:
            return False
        return True

    async def has_usage(self, key_id: int) -> bool:
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(sa.select(usage_records.c.id)
                                      .where(usage_records.c.key_id == str(key_id))
                                      .limit(1))).first()
        return row is not None

    async def count_admins(self) -> int:
        async with self.db.engine.connect() as conn:
            value = (await conn.execute(
                sa.select(sa.func.count()).select_from(api_keys)
                .where(api_keys.c.scope == "admin", api_keys.c.enabled.is_(True)))).scalar()
        return int(value or 0)
