"""Managing API keys: what the admin API, the proxy toolkit's routes and ``inferd keys`` share.

``KeyAdmin`` validates a ``KeySpec`` / ``KeyUpdate``, writes through ``KeyStore`` and loads the
changed key into this process's ``KeyRing`` at once (other gateways follow when the change is
announced, else within their refresh interval). ``page`` lists keys by cursor.
``key_view`` is the one public shape of a key: never the hash, the secret key only on
creation.
"""

from __future__ import annotations

from typing import Any, Literal

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
from inferd.store.keys import KeyStore
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


def key_view(row: dict[str, Any], *, key: str | None = None,
             with_secret: bool = False) -> dict[str, Any]:
    """A key as the API shows it (``key`` only when just created)."""
    view: dict[str, Any] = {
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


def _columns(spec: KeyLimits, *, only_set: bool) -> dict[str, Any]:
    data = spec.model_dump(exclude_unset=only_set)
    data.pop("expires_in", None)
    if "log_bodies" in data and data["log_bodies"] is None:  # null: off on create, else kept
        del data["log_bodies"]
    if "metadata" in data:
        data["extra"] = data.pop("metadata")
    if data.get("name") is None and "name" in data:
        data["name"] = ""
    return data


class KeyAdmin:
    """Create, list, change and revoke keys."""

    def __init__(self, store: KeyStore, ring: KeyRing | None = None, *,
                 storage: tuple[int, int] = (0, 0), audit: AuditLog | None = None) -> None:
        self.store = store
        self.ring = ring
        self.storage = storage  # the default storage quota: (bytes, objects)
        self.audit = audit  # records every change (``inferd.audit``)
        self.teams = TeamAdmin(TeamStore(store.db))  # checks the team and user of a key

    async def _link(self, values: dict[str, Any], current: dict[str, Any] | None) -> None:
        """Check the team, user and scope a key is to have (``values`` over ``current``) and
        show the team's and user's names in ``team`` and ``owner`` when they change."""
        if not ({"team_id", "user_id", "scope"} & values.keys()):
            return
        old = current or {}
        team_id = values["team_id"] if "team_id" in values else old.get("team_id")
        user_id = values["user_id"] if "user_id" in values else old.get("user_id")
        scope = values.get("scope") or old.get("scope") or "user"
        team, user = await self.teams.check_key_links(team_id, user_id, scope)
        if team is not None and values.get("team_id") is not None and not values.get("team"):
            values["team"] = team
        if user is not None and values.get("user_id") is not None and not values.get("owner"):
            values["owner"] = user

    async def _record(self, action: str, key_id: object, before: dict[str, Any] | None,
                      after: dict[str, Any] | None) -> None:
        if self.audit is not None:
            await self.audit.record(action, "api_key", key_id,
                                    before=None if before is None else key_view(before),
                                    after=None if after is None else key_view(after))

    async def _changed(self, row: dict[str, Any] | None, key_id: int,
                       key_hash: str | None, change_id: int | None) -> None:
        if self.ring is not None:
            await self.ring.changed(row, key_id=str(key_id), key_hash=key_hash,
                                    change_id=change_id)

    async def create(self, spec: KeySpec, *, key: str | None = None) -> dict[str, Any]:
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
        values.update(key_hash=hash_key(secret), prefix=display_prefix(secret),
                      webhook_secret=new_webhook_secret(), enabled=True)
        await self._link(values, None)
        row = await self.store.create(values)
        await self._changed(row, row["id"], row["key_hash"], row.get("change_id"))
        await self._record("key.create", row["id"], None, row)
        return key_view(row, key=secret)

    async def page(self, *, after: int | None = None, limit: int = 100,
                   **search: Any) -> dict[str, Any]:
        """A page of keys by id after ``after`` (OpenAI's list shape: ``has_more``,
        ``first_id``, ``last_id``); ``search``: ``owner``, ``team``, ``team_id``, ``user_id``,
        ``name``, ``prefix``, ``search`` (see ``KeyStore.page``)."""
        rows = await self.store.page(after=after, limit=limit + 1, **search)
        data = [key_view(r) for r in rows[:limit]]
        return {"object": "list", "data": data,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
                "has_more": len(rows) > limit}

    async def get(self, key_id: int) -> dict[str, Any]:
        row = await self.store.get(key_id)
        if row is None:
            raise NotFound(f"No API key with id {key_id}.", code="key_not_found")
        view = key_view(row, with_secret=True)
        use = await StorageStore(self.store.db).use(str(key_id))
        quota_bytes, quota_objects = self.storage
        view["storage"] = {
            "bytes": use.bytes, "objects": use.objects,
            "quota_bytes": quota_bytes if row.get("storage_bytes") is None
            else row["storage_bytes"],
            "quota_objects": quota_objects if row.get("storage_objects") is None
            else row["storage_objects"]}
        return view

    async def update(self, key_id: int, change: KeyUpdate) -> dict[str, Any]:
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

    async def disable(self, key_id: int) -> dict[str, Any]:
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
