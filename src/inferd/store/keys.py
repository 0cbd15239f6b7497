"""Repository for API keys (``api_keys``) and the feed of key changes gateways poll.

Every change to a key appends the key's id and hash to ``api_key_changes`` in its transaction;
a gateway reads the rows after the last id it saw and reloads only those keys
(``inferd.auth.keys.KeyRing``). Creations run side by side, so an id may commit after a higher
one: a gateway looks again for the ids it skipped for a while (``KeyRing`` does). Rows older
than ``CHANGE_RETENTION_SECONDS`` are pruned by the writers now and then; a gateway that could
not read the feed for longer starts its cache over.

Updates and deletes also write a new random value under ``keys.version`` in the ``kv`` table,
first in their transaction, so that they queue behind each other (see ``KeepAnAdmin``).

A change that would leave no usable admin key (the last enabled, unexpired one deleted,
disabled, expired or made a user key) is refused with ``Conflict``: nobody could manage keys
afterwards. The check runs in the changing transaction, after it has written the version row
and locked the admin rows, so two concurrent changes cannot each leave the other one last.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal, NotRequired, TypedDict

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from inferd.errors import Conflict
from inferd.store.db import Database
from inferd.store.repo import kv_upsert
from inferd.store.tables import kv
from inferd.store.tables_control import api_key_changes, api_keys, teams, usage_records, users

VERSION_KEY = "keys.version"
# Changes are kept this long (a gateway that has not read the feed for half of it starts over).
CHANGE_RETENTION_SECONDS = 600.0
# Every this many changes, a writer prunes the expired ones.
PRUNE_EVERY = 256

# Columns a caller may set on create or update (everything but ids, hashes and times).
EDITABLE = frozenset({"name", "owner", "team", "scope", "models", "rpm", "tpm", "ipm",
                      "upm", "image_budget", "storage_bytes", "storage_objects",
                      "token_budget", "budget_period", "max_budget", "budget_alert",
                      "expires_at", "enabled", "extra",
                      "team_id", "user_id", "log_bodies", "queue_weight"})

# What ``scope`` and ``budget_period`` hold (checked on the way in, ``inferd.auth.admin``).
KeyScope = Literal["admin", "user", "auditor", "scim"]
BudgetPeriod = Literal["day", "week", "month"]  # null: a total budget


class KeyColumns(TypedDict, total=False):
    """The columns of a key a caller sets (``EDITABLE``, and on create or when the key itself
    changes ``key_hash``, ``prefix``, ``webhook_secret``): on create, those left out take
    their defaults; on update, only those given change."""

    name: str
    owner: str | None
    team: str | None
    key_hash: str
    prefix: str
    scope: KeyScope
    models: list[str] | None  # null: every model
    rpm: int | None
    tpm: int | None
    ipm: int | None
    upm: int | None
    image_budget: int | None
    storage_bytes: int | None
    storage_objects: int | None
    token_budget: int | None
    budget_period: BudgetPeriod | None
    max_budget: float | None
    budget_alert: int | None
    expires_at: float | None
    enabled: bool
    webhook_secret: str  # in the clear: the store seals it
    extra: dict[str, str] | None  # the API's ``metadata``
    team_id: int | None
    user_id: int | None
    log_bodies: bool
    queue_weight: float | None


class KeyLinks(TypedDict, total=False):
    """What a key's team and user add to it (``KEYS``; null for a key without them)."""

    team_name: str | None
    team_models: list[str] | None
    team_queue_weight: float | None
    team_rpm: int | None
    team_tpm: int | None
    team_token_budget: int | None
    team_budget_period: BudgetPeriod | None
    team_max_budget: float | None
    team_budget_alert: int | None
    team_created_at: float | None
    user_name: str | None
    user_role: str | None
    user_disabled: bool | None
    user_rpm: int | None
    user_tpm: int | None
    user_token_budget: int | None
    user_budget_period: BudgetPeriod | None
    user_max_budget: float | None
    user_budget_alert: int | None
    user_created_at: float | None


class KeyRow(KeyLinks):
    """A row of ``api_keys`` (``webhook_secret`` opened), read with its team's and user's
    columns (``KEYS``) but when just inserted without either; ``change_id``: the change a
    create or update appended to the feed."""

    id: int
    name: str
    owner: str | None
    team: str | None
    key_hash: str
    prefix: str
    scope: KeyScope
    models: list[str] | None
    rpm: int | None
    tpm: int | None
    ipm: int | None
    upm: int | None
    image_budget: int | None
    storage_bytes: int | None
    storage_objects: int | None
    token_budget: int | None
    budget_period: BudgetPeriod | None
    max_budget: float | None
    budget_alert: int | None
    expires_at: float | None
    enabled: bool
    webhook_secret: str
    extra: dict[str, str] | None
    created_at: float
    updated_at: float
    team_id: int | None
    user_id: int | None
    log_bodies: bool
    queue_weight: float | None
    change_id: NotRequired[int]


def _links(m: sa.RowMapping) -> KeyLinks:
    return KeyLinks(
        team_name=m["team_name"], team_models=m["team_models"],
        team_queue_weight=m["team_queue_weight"], team_rpm=m["team_rpm"],
        team_tpm=m["team_tpm"], team_token_budget=m["team_token_budget"],
        team_budget_period=m["team_budget_period"], team_max_budget=m["team_max_budget"],
        team_budget_alert=m["team_budget_alert"], team_created_at=m["team_created_at"],
        user_name=m["user_name"], user_role=m["user_role"], user_disabled=m["user_disabled"],
        user_rpm=m["user_rpm"], user_tpm=m["user_tpm"],
        user_token_budget=m["user_token_budget"],
        user_budget_period=m["user_budget_period"], user_max_budget=m["user_max_budget"],
        user_budget_alert=m["user_budget_alert"], user_created_at=m["user_created_at"])


def _key(m: sa.RowMapping) -> KeyRow:
    """The key of a row of ``api_keys`` or of ``KEYS`` (``webhook_secret`` as stored)."""
    key = KeyRow(
        id=m["id"], name=m["name"], owner=m["owner"], team=m["team"], key_hash=m["key_hash"],
        prefix=m["prefix"], scope=m["scope"], models=m["models"], rpm=m["rpm"], tpm=m["tpm"],
        ipm=m["ipm"], upm=m["upm"], image_budget=m["image_budget"],
        storage_bytes=m["storage_bytes"], storage_objects=m["storage_objects"],
        token_budget=m["token_budget"], budget_period=m["budget_period"],
        max_budget=m["max_budget"], budget_alert=m["budget_alert"],
        expires_at=m["expires_at"], enabled=m["enabled"], webhook_secret=m["webhook_secret"],
        extra=m["extra"], created_at=m["created_at"], updated_at=m["updated_at"],
        team_id=m["team_id"], user_id=m["user_id"], log_bodies=m["log_bodies"],
        queue_weight=m["queue_weight"])
    return {**key, **_links(m)} if "team_name" in m else key


# A key with what its team and user add to it: their models, limits, role and disabled flag
# (``team_*`` and ``user_*`` columns, null for a key without them).
_LEVEL_COLUMNS = ("rpm", "tpm", "token_budget", "budget_period", "max_budget", "budget_alert",
                  "created_at")
KEYS = (sa.select(api_keys, teams.c.name.label("team_name"),
                  teams.c.models.label("team_models"),
                  teams.c.queue_weight.label("team_queue_weight"),
                  *(teams.c[c].label(f"team_{c}") for c in _LEVEL_COLUMNS),
                  users.c.name.label("user_name"), users.c.role.label("user_role"),
                  users.c.disabled.label("user_disabled"),
                  *(users.c[c].label(f"user_{c}") for c in _LEVEL_COLUMNS))
        .select_from(api_keys.outerjoin(teams, teams.c.id == api_keys.c.team_id)
                     .outerjoin(users, users.c.id == api_keys.c.user_id)))


def usable_admin() -> sa.ColumnElement[bool]:
    """The condition of a usable admin key: enabled, unexpired, and its user (if any) an
    enabled admin."""
    return sa.and_(
        api_keys.c.scope == "admin", api_keys.c.enabled.is_(True),
        sa.or_(api_keys.c.expires_at.is_(None), api_keys.c.expires_at > time.time()),
        sa.or_(api_keys.c.user_id.is_(None), api_keys.c.user_id.in_(
            sa.select(users.c.id).where(users.c.role == "admin", users.c.disabled.is_(False)))))


async def _bump_version(conn: AsyncConnection) -> None:
    await conn.execute(kv_upsert(conn.dialect.name, VERSION_KEY, uuid.uuid4().hex))


_INSERT_CHANGE = sa.insert(api_key_changes)
_PRUNE = sa.delete(api_key_changes).where(api_key_changes.c.changed_at < sa.bindparam("before"))


async def record_change(conn: AsyncConnection, key_id: int, key_hash: str) -> int:
    """Append the change to the feed (inside the change's transaction); its id."""
    now = time.time()
    result = await conn.execute(_INSERT_CHANGE, {"key_id": key_id, "key_hash": key_hash,
                                                 "changed_at": now})
    change_id = int(result.inserted_primary_key[0]) if result.inserted_primary_key else 0
    if change_id and change_id % PRUNE_EVERY == 0:
        await conn.execute(_PRUNE, {"before": now - CHANGE_RETENTION_SECONDS})
    return change_id


async def record_changes(conn: AsyncConnection,
                         where: sa.ColumnElement[bool]) -> list[tuple[int, str]]:
    """Append a change of every key matching ``where`` to the feed in one statement (a team's
    or a user's change: their keys are read with its columns); ``(key id, key hash)`` of
    those keys."""
    keys = (await conn.execute(sa.select(api_keys.c.id, api_keys.c.key_hash).where(where)
                               .order_by(api_keys.c.id))).all()
    if keys:
        now = time.time()
        await conn.execute(sa.insert(api_key_changes).from_select(
            ["key_id", "key_hash", "changed_at"],
            sa.select(api_keys.c.id, api_keys.c.key_hash, sa.literal(now, sa.Double))
            .where(where).order_by(api_keys.c.id)))
        await conn.execute(_PRUNE, {"before": now - CHANGE_RETENTION_SECONDS})
    return [(int(k.id), str(k.key_hash)) for k in keys]


async def _usable_admins(conn: AsyncConnection) -> int:
    """Enabled, unexpired admin keys, read with row locks (up to date inside a transaction)."""
    rows = await conn.execute(sa.select(api_keys.c.id).where(usable_admin()).with_for_update())
    return len(rows.all())


class _NoSuchKey(Exception):
    """Rolls back a change to a key that does not exist."""


class KeepAnAdmin:
    """Wraps a key change: refuses it (``Conflict``, rolled back) when it would remove the
    last usable admin key. Entered inside the change's transaction."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        self.before = 0

    async def __aenter__(self) -> KeepAnAdmin:
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


_INSERT_KEY_RETURNING = sa.insert(api_keys).returning(*api_keys.c)
_KEY_COLUMNS = [c.name for c in api_keys.c if c.name != "id"]


def _insert_key_and_change() -> sa.Select[Any]:
    """PostgreSQL: insert a key and its change in one statement (``INSERT`` in a CTE)."""
    key = (sa.insert(api_keys).values({c: sa.bindparam(c) for c in _KEY_COLUMNS})
           .returning(*api_keys.c).cte("made_key"))
    change = (sa.insert(api_key_changes)
              .from_select(["key_id", "key_hash", "changed_at"],
                           sa.select(key.c.id, key.c.key_hash, key.c.updated_at))
              .returning(api_key_changes.c.id).cte("made_change"))
    return sa.select(key, change.c.id.label("change_id")).select_from(key.join(change, sa.true()))


_INSERT_KEY_AND_CHANGE = _insert_key_and_change()


class KeyStore:
    """Create, read, update and delete API key rows (``webhook_secret`` is stored encrypted:
    ``Database.secrets``)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def _row(self, row: sa.Row[Any]) -> KeyRow:
        values = _key(row._mapping)
        if values.get("webhook_secret"):
            values["webhook_secret"] = self.db.secrets.open(values["webhook_secret"])
        return values

    async def version(self) -> str | None:
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(sa.select(kv.c.value)
                                      .where(kv.c.key == VERSION_KEY))).first()
        return None if row is None else str(row[0])

    async def create(self, values: KeyColumns) -> KeyRow:
        """Insert a key (``values`` holds ``key_hash``, ``prefix``, ``webhook_secret`` too);
        the row, with ``change_id``: its change in the feed (likewise ``update``)."""
        now = time.time()
        if values.get("webhook_secret"):
            values = {**values, "webhook_secret": self.db.secrets.seal(values["webhook_secret"])}
        params = {**values, "created_at": now, "updated_at": now}
        # No ``keys.version`` write: a new key cannot remove the last admin key, and creations
        # need not queue behind each other.
        if self.db.dialect == "postgresql":
            # The key and its change in one statement (atomic on its own): one round trip.
            full = {**dict.fromkeys(_KEY_COLUMNS), "name": "", "enabled": True,
                    "log_bodies": False, **params}
            async with self.db.engine.connect() as conn:
                conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                made = (await conn.execute(_INSERT_KEY_AND_CHANGE, full)).one()
                change = int(made.change_id)
                if change % PRUNE_EVERY == 0:
                    await conn.execute(_PRUNE, {"before": now - CHANGE_RETENTION_SECONDS})
            key = _key(made._mapping)
            if key.get("webhook_secret"):
                key["webhook_secret"] = self.db.secrets.open(key["webhook_secret"])
            if key.get("team_id") is not None or key.get("user_id") is not None:
                key = await self.get(int(key["id"])) or key  # with its team's and user's
            return {**key, "change_id": change}
        async with self.db.engine.begin() as conn:
            if conn.dialect.insert_returning:  # one round trip fewer
                row = (await conn.execute(_INSERT_KEY_RETURNING, params)).one()
            else:
                result = await conn.execute(sa.insert(api_keys), params)
                key_id = result.inserted_primary_key[0] if result.inserted_primary_key else None
                row = (await conn.execute(sa.select(api_keys)
                                          .where(api_keys.c.id == key_id))).one()
            change = await record_change(conn, row.id, row.key_hash)
        made = self._row(row)
        if made.get("team_id") is not None or made.get("user_id") is not None:
            made = await self.get(int(made["id"])) or made  # with its team's and user's
        return {**made, "change_id": change}

    async def page(self, *, after: int | None = None, limit: int = 100,
                   owner: str | None = None, team: str | None = None,
                   name: str | None = None, prefix: str | None = None,
                   search: str | None = None, team_id: int | None = None,
                   user_id: int | None = None) -> list[KeyRow]:
        """Up to ``limit`` keys by id after ``after``: ``owner``, ``team``, ``team_id`` and
        ``user_id`` match exactly,
        ``name`` and ``prefix`` (the display prefix) from the start, ``search`` anywhere in
        the name, owner, team or prefix (case-insensitive)."""
        query = KEYS.order_by(api_keys.c.id).limit(limit)
        if after is not None:
            query = query.where(api_keys.c.id > after)
        if owner is not None:
            query = query.where(api_keys.c.owner == owner)
        if team is not None:
            query = query.where(api_keys.c.team == team)
        if team_id is not None:
            query = query.where(api_keys.c.team_id == team_id)
        if user_id is not None:
            query = query.where(api_keys.c.user_id == user_id)
        if name is not None:
            query = query.where(api_keys.c.name.startswith(name, autoescape=True))
        if prefix is not None:
            query = query.where(api_keys.c.prefix.startswith(prefix, autoescape=True))
        if search:
            query = query.where(sa.or_(*(
                sa.func.lower(column).contains(search.lower(), autoescape=True)
                for column in (api_keys.c.name, api_keys.c.owner, api_keys.c.team,
                               api_keys.c.prefix))))
        async with self.db.engine.connect() as conn:
            return [self._row(r) for r in await conn.execute(query)]

    async def by_hash(self, key_hashes: list[str]) -> list[KeyRow]:
        """The keys with these hashes (an indexed lookup: ``key_hash`` is unique)."""
        async with self.db.engine.connect() as conn:
            rows = await conn.execute(KEYS.where(api_keys.c.key_hash.in_(key_hashes)))
            return [self._row(r) for r in rows]

    async def by_id(self, key_ids: list[int]) -> list[KeyRow]:
        async with self.db.engine.connect() as conn:
            rows = await conn.execute(KEYS.where(api_keys.c.id.in_(key_ids)))
            return [self._row(r) for r in rows]

    async def last_change(self) -> int:
        """The id of the newest change in the feed (0: none)."""
        async with self.db.engine.connect() as conn:
            value = (await conn.execute(sa.select(sa.func.max(api_key_changes.c.id)))).scalar()
        return int(value or 0)

    async def changes_since(self, change_id: int,
                            limit: int = 10_000) -> list[tuple[int, int, str]]:
        """``(change id, key id, key hash)`` of the changes after ``change_id``, oldest first."""
        async with self.db.engine.connect() as conn:
            rows = await conn.execute(
                sa.select(api_key_changes.c.id, api_key_changes.c.key_id,
                          api_key_changes.c.key_hash)
                .where(api_key_changes.c.id > change_id)
                .order_by(api_key_changes.c.id).limit(limit))
            return [(int(r[0]), int(r[1]), str(r[2])) for r in rows]

    async def changes_in(self, change_ids: list[int]) -> list[tuple[int, int, str]]:
        """The changes with these ids that exist (committed since they were looked for)."""
        async with self.db.engine.connect() as conn:
            rows = await conn.execute(
                sa.select(api_key_changes.c.id, api_key_changes.c.key_id,
                          api_key_changes.c.key_hash)
                .where(api_key_changes.c.id.in_(change_ids)).order_by(api_key_changes.c.id))
            return [(int(r[0]), int(r[1]), str(r[2])) for r in rows]

    async def has_usable_admin(self) -> bool:
        """Whether an enabled, unexpired admin key exists (``scope`` is indexed)."""
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(sa.select(api_keys.c.id).where(usable_admin())
                                      .limit(1))).first()
        return row is not None

    async def get(self, key_id: int) -> KeyRow | None:
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(KEYS.where(api_keys.c.id == key_id))).first()
        return None if row is None else self._row(row)

    async def find_by_name(self, name: str) -> KeyRow | None:
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(KEYS.where(api_keys.c.name == name)
                                      .order_by(api_keys.c.id).limit(1))).first()
        return None if row is None else self._row(row)

    async def update(self, key_id: int, values: KeyColumns) -> KeyRow | None:
        """Change some columns; ``None`` when the key does not exist."""
        try:
            async with self.db.engine.begin() as conn:
                async with KeepAnAdmin(conn):
                    if "key_hash" in values:  # the old hash must stop working everywhere
                        old = (await conn.execute(sa.select(api_keys.c.key_hash)
                                                  .where(api_keys.c.id == key_id))).scalar()
                        if old is not None and old != values["key_hash"]:
                            await record_change(conn, key_id, str(old))
                    await conn.execute(sa.update(api_keys).where(api_keys.c.id == key_id)
                                       .values(**values, updated_at=time.time()))
                row = (await conn.execute(KEYS.where(api_keys.c.id == key_id))).first()
                if row is None:
                    raise _NoSuchKey  # rolls the version change back
                change = await record_change(conn, row.id, row.key_hash)
        except _NoSuchKey:
            return None
        return {**self._row(row), "change_id": change}

    async def delete(self, key_id: int) -> tuple[str, int] | None:
        """Delete a key; its hash and the change's id, or ``None`` when it does not exist."""
        try:
            async with self.db.engine.begin() as conn:
                async with KeepAnAdmin(conn):
                    key_hash = (await conn.execute(sa.select(api_keys.c.key_hash)
                                                   .where(api_keys.c.id == key_id))).scalar()
                    result = await conn.execute(sa.delete(api_keys)
                                                .where(api_keys.c.id == key_id))
                if not result.rowcount or key_hash is None:
                    raise _NoSuchKey
                change = await record_change(conn, key_id, str(key_hash))
        except _NoSuchKey:
            return None
        return str(key_hash), change

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
