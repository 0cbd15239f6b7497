"""Managing API keys: what the admin API, the proxy toolkit's routes and ``inferd keys`` share.

``KeyAdmin`` validates a ``KeySpec`` / ``KeyUpdate``, writes through ``KeyStore`` and loads the
changed key into this process's ``KeyRing`` at once (other gateways follow when the change is
announced, else within their refresh interval). ``page`` lists keys by cursor.
``key_view`` is the one public shape of a key: never the hash, the secret key only on
creation.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict, Unpack

from pydantic import BaseModel, ConfigDict, Field, field_validator

from inferd.audit import AuditLog
from inferd.auth.keys import (
    MIN_KEY_CHARS,
    KeyRing,
    display_prefix,
    generate_key,
    hash_key,
)
from inferd.auth.limits import MAX_BUDGET
from inferd.auth.principal import MAX_QUEUE_WEIGHT, BudgetPeriod, Scope
from inferd.auth.teams import TeamAdmin
from inferd.errors import InvalidRequest, NotFound
from inferd.ids import new_webhook_secret
from inferd.schemas.openai import INT32, INT64, MAX_DURATION, MAX_EPOCH
from inferd.store.keys import KeyColumns, KeyRow, KeyStore
from inferd.store.storage import StorageStore
from inferd.store.teams import TeamStore


class KeyLimits(BaseModel):
    """The limits and metadata an admin may set on a key (all optional on update)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, max_length=200)
    owner: str | None = Field(default=None, max_length=191)
    team: str | None = Field(default=None, max_length=191)
    # The team and the user the key belongs to (their limits and models apply too).
    team_id: int | None = Field(default=None, ge=0, le=INT64)
    user_id: int | None = Field(default=None, ge=0, le=INT64)
    models: list[str] | None = Field(default=None, max_length=1000)
    rpm: int | None = Field(default=None, ge=1, le=INT32)
    tpm: int | None = Field(default=None, ge=1, le=INT32)
    ipm: int | None = Field(default=None, ge=1, le=INT32)  # images per minute
    # image cost units (steps x megapixels x pictures) per minute, and per budget period
    upm: int | None = Field(default=None, ge=1, le=INT32)
    image_budget: int | None = Field(default=None, ge=0, le=INT64)
    # storage quota (null: the settings' default; 0: no limit)
    storage_bytes: int | None = Field(default=None, ge=0, le=INT64)
    storage_objects: int | None = Field(default=None, ge=0, le=INT32)
    token_budget: int | None = Field(default=None, ge=0, le=INT64)
    budget_period: BudgetPeriod | None = None
    # money budget in the price book's currency units per ``budget_period``, and the
    # percentage of it at which a warning is logged (null: 80)
    max_budget: float | None = Field(default=None, ge=0, le=MAX_BUDGET, allow_inf_nan=False)
    budget_alert: int | None = Field(default=None, ge=1, le=100)
    expires_at: float | None = Field(default=None, gt=0, le=MAX_EPOCH, allow_inf_nan=False)
    metadata: dict[str, str] | None = None
    # the request log keeps the bodies of this key's requests and answers (off by default)
    log_bodies: bool | None = None
    # its weight among its team's keys (or alone) in the gateway's fair queueing (null: the
    # settings' ``queue_weights``, else 1)
    queue_weight: float | None = Field(default=None, gt=0, le=MAX_QUEUE_WEIGHT,
                                       allow_inf_nan=False)


class KeySpec(KeyLimits):
    """A new key."""

    scope: Scope = "user"
    # Seconds from now (an alternative to ``expires_at``).
    expires_in: float | None = Field(default=None, gt=0, le=MAX_DURATION, allow_inf_nan=False)


class KeyUpdate(KeyLimits):
    """A change to a key: only the fields present in the request are changed. ``scope`` and
    ``enabled`` are never null (a key always has both): absent means unchanged."""

    scope: Scope | None = None
    enabled: bool | None = None

    @field_validator("scope", "enabled")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:  # sent as null (an absent field is not validated)
            raise ValueError("may be left out, but not null")
        return value


class KeyStorage(TypedDict):
    """What a key stores, and its quota (the settings' default where the key sets none)."""

    bytes: int
    objects: int
    quota_bytes: int
    quota_objects: int


class KeyView(TypedDict):
    """A key as the API shows it (``c.ApiKey``): ``key`` only in the creation answer,
    ``webhook_secret`` in that one and in a single key's view, ``storage`` in the latter."""

    id: int
    object: Literal["api_key"]
    name: str
    prefix: str
    scope: Scope
    owner: str | None
    team: str | None
    team_id: int | None
    user_id: int | None
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
    user_disabled: bool
    metadata: dict[str, str]
    created_at: float
    updated_at: float
    log_bodies: bool
    queue_weight: float | None
    key: NotRequired[str]
    webhook_secret: NotRequired[str]
    storage: NotRequired[KeyStorage]


class KeySearch(TypedDict, total=False):
    """What a page of keys is filtered by (``KeyStore.page``)."""

    owner: str | None
    team: str | None
    name: str | None
    prefix: str | None
    search: str | None
    team_id: int | None
    user_id: int | None


class KeyPage(TypedDict):
    """A page of keys by id (``c.ApiKeyList``)."""

    object: Literal["list"]
    data: list[KeyView]
    first_id: int | None
    last_id: int | None
    has_more: bool


def key_view(row: KeyRow, *, key: str | None = None,
             with_secret: bool = False) -> KeyView:
    """A key as the API shows it (``key`` only when just created)."""
    view: KeyView = {
        "id": row["id"], "object": "api_key", "name": row["name"], "prefix": row["prefix"],
        "scope": row["scope"], "owner": row["owner"], "team": row["team"],
        "team_id": row.get("team_id"), "user_id": row.get("user_id"),
        "models": row["models"], "rpm": row["rpm"], "tpm": row["tpm"],
        "ipm": row.get("ipm"), "upm": row.get("upm"), "image_budget": row.get("image_budget"),
        "storage_bytes": row.get("storage_bytes"), "storage_objects": row.get("storage_objects"),
        "token_budget": row["token_budget"], "budget_period": row["budget_period"],
        "max_budget": row.get("max_budget"), "budget_alert": row.get("budget_alert"),
        "expires_at": row["expires_at"], "enabled": bool(row["enabled"]),
        # its user is disabled: the key does not work though it is enabled
        "user_disabled": bool(row.get("user_disabled")),
        "metadata": row["extra"] or {}, "created_at": row["created_at"],
        "updated_at": row["updated_at"], "log_bodies": bool(row.get("log_bodies")),
        "queue_weight": row.get("queue_weight"),
    }
    if key is not None:
        view["key"] = key
    if key is not None or with_secret:
        view["webhook_secret"] = row["webhook_secret"]
    return view


def _columns(spec: KeyLimits, *, only_set: bool) -> KeyColumns:
    """The columns of the fields of ``spec`` (``only_set``: of those given only)."""
    given = spec.model_fields_set if only_set else type(spec).model_fields.keys()
    columns: KeyColumns = {}
    if "name" in given:
        columns["name"] = spec.name or ""
    if "owner" in given:
        columns["owner"] = spec.owner
    if "team" in given:
        columns["team"] = spec.team
    if "team_id" in given:
        columns["team_id"] = spec.team_id
    if "user_id" in given:
        columns["user_id"] = spec.user_id
    if "models" in given:
        columns["models"] = spec.models
    if "rpm" in given:
        columns["rpm"] = spec.rpm
    if "tpm" in given:
        columns["tpm"] = spec.tpm
    if "ipm" in given:
        columns["ipm"] = spec.ipm
    if "upm" in given:
        columns["upm"] = spec.upm
    if "image_budget" in given:
        columns["image_budget"] = spec.image_budget
    if "storage_bytes" in given:
        columns["storage_bytes"] = spec.storage_bytes
    if "storage_objects" in given:
        columns["storage_objects"] = spec.storage_objects
    if "token_budget" in given:
        columns["token_budget"] = spec.token_budget
    if "budget_period" in given:
        columns["budget_period"] = spec.budget_period
    if "max_budget" in given:
        columns["max_budget"] = spec.max_budget
    if "budget_alert" in given:
        columns["budget_alert"] = spec.budget_alert
    if "expires_at" in given:
        columns["expires_at"] = spec.expires_at
    if "log_bodies" in given and spec.log_bodies is not None:  # null: off on create, else kept
        columns["log_bodies"] = spec.log_bodies
    if "queue_weight" in given:
        columns["queue_weight"] = spec.queue_weight
    # ``scope`` and ``enabled`` are never null (``KeyUpdate`` refuses it when given)
    if isinstance(spec, KeySpec | KeyUpdate) and "scope" in given and spec.scope is not None:
        columns["scope"] = spec.scope
    if isinstance(spec, KeyUpdate) and "enabled" in given and spec.enabled is not None:
        columns["enabled"] = spec.enabled
    if "metadata" in given:
        columns["extra"] = spec.metadata
    return columns


class KeyAdmin:
    """Create, list, change and revoke keys."""

    def __init__(self, store: KeyStore, ring: KeyRing | None = None, *,
                 storage: tuple[int, int] = (0, 0), audit: AuditLog | None = None) -> None:
        self.store = store
        self.ring = ring
        self.storage = storage  # the default storage quota: (bytes, objects)
        self.audit = audit  # records every change (``inferd.audit``)
        self.teams = TeamAdmin(TeamStore(store.db))  # checks the team and user of a key

    async def _link(self, values: KeyColumns, current: KeyRow | None) -> None:
        """Check the team, user and scope a key is to have (``values`` over ``current``) and
        show the team's and user's names in ``team`` and ``owner`` when they change."""
        if not ({"team_id", "user_id", "scope"} & values.keys()):
            return
        team_id = (values["team_id"] if "team_id" in values else
                   None if current is None else current.get("team_id"))
        user_id = (values["user_id"] if "user_id" in values else
                   None if current is None else current.get("user_id"))
        scope = (values.get("scope") or (None if current is None else current.get("scope"))
                 or "user")
        team, user = await self.teams.check_key_links(team_id, user_id, scope)
        if team is not None and values.get("team_id") is not None and not values.get("team"):
            values["team"] = team
        if user is not None and values.get("user_id") is not None and not values.get("owner"):
            values["owner"] = user

    async def _record(self, action: str, key_id: object, before: KeyRow | None,
                      after: KeyRow | None) -> None:
        if self.audit is not None:
            await self.audit.record(action, "api_key", key_id,
                                    before=None if before is None else key_view(before),
                                    after=None if after is None else key_view(after))

    async def _changed(self, row: KeyRow | None, key_id: int,
                       key_hash: str | None, change_id: int | None) -> None:
        if self.ring is not None:
            await self.ring.changed(row, key_id=str(key_id), key_hash=key_hash,
                                    change_id=change_id)

    async def create(self, spec: KeySpec, *, key: str | None = None) -> KeyView:
        """A new key; the answer holds the key itself, which is never shown again."""
        import time

        if key is not None and len(key) < MIN_KEY_CHARS:
            raise InvalidRequest(f"An API key must have at least {MIN_KEY_CHARS} characters.",
                                 param="key")
        secret = key or generate_key()
        values = _columns(spec, only_set=False)
        values["name"] = values.get("name") or ""
        if spec.expires_in is not None:
            values["expires_at"] = time.time() + spec.expires_in
        values["key_hash"] = hash_key(secret)
        values["prefix"] = display_prefix(secret)
        values["webhook_secret"] = new_webhook_secret()
        values["enabled"] = True
        await self._link(values, None)
        row = await self.store.create(values)
        await self._changed(row, row["id"], row["key_hash"], row.get("change_id"))
        await self._record("key.create", row["id"], None, row)
        return key_view(row, key=secret)

    async def page(self, *, after: int | None = None, limit: int = 100,
                   **search: Unpack[KeySearch]) -> KeyPage:
        """A page of keys by id after ``after`` (OpenAI's list shape: ``has_more``,
        ``first_id``, ``last_id``); ``search``: ``owner``, ``team``, ``team_id``, ``user_id``,
        ``name``, ``prefix``, ``search`` (see ``KeyStore.page``)."""
        rows = await self.store.page(after=after, limit=limit + 1, **search)
        data = [key_view(r) for r in rows[:limit]]
        return {"object": "list", "data": data,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
                "has_more": len(rows) > limit}

    async def get(self, key_id: int) -> KeyView:
        row = await self.store.get(key_id)
        if row is None:
            raise NotFound(f"No API key with id {key_id}.", code="key_not_found")
        view = key_view(row, with_secret=True)
        use = await StorageStore(self.store.db).use(str(key_id))
        quota_bytes, quota_objects = self.storage
        own_bytes, own_objects = row.get("storage_bytes"), row.get("storage_objects")
        view["storage"] = {
            "bytes": use.bytes, "objects": use.objects,
            "quota_bytes": quota_bytes if own_bytes is None else own_bytes,
            "quota_objects": quota_objects if own_objects is None else own_objects}
        return view

    async def update(self, key_id: int, change: KeyUpdate) -> KeyView:
        values = _columns(change, only_set=True)
        linking = bool({"team_id", "user_id", "scope"} & values.keys())
        before = (await self.store.get(key_id) if values and (self.audit is not None or linking)
                  else None)
        if linking:
            if before is None:
                raise NotFound(f"No API key with id {key_id}.", code="key_not_found")
            await self._link(values, before)
        row = await self.store.update(key_id, values) if values else await self.store.get(key_id)
        if row is None:
            raise NotFound(f"No API key with id {key_id}.", code="key_not_found")
        if values:
            await self._changed(row, key_id, row["key_hash"], row.get("change_id"))
            action = ("key.disable" if values == {"enabled": False} else
                      "key.enable" if values == {"enabled": True} else "key.update")
            await self._record(action, key_id, before, row)
        return key_view(row)

    async def disable(self, key_id: int) -> KeyView:
        return await self.update(key_id, KeyUpdate(enabled=False))

    async def delete(self, key_id: int) -> None:
        before = await self.store.get(key_id) if self.audit is not None else None
        deleted = await self.store.delete(key_id)
        if deleted is None:
            raise NotFound(f"No API key with id {key_id}.", code="key_not_found")
        await self._changed(None, key_id, *deleted)
        await self._record("key.delete", key_id, before, None)

    async def revoke(self, key_id: int) -> Literal["deleted", "disabled"]:
        """The proxy toolkit's rule: a key that was used is disabled (its usage stays), an
        unused one deleted."""
        if await self.store.has_usage(key_id):
            await self.disable(key_id)
            return "disabled"
        await self.delete(key_id)
        return "deleted"
