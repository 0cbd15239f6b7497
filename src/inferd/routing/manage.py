"""Managing models and replicas at run time: what the admin API and the proxy toolkit's routes call.

Every change is validated (names, aliases, the replica URL allow-list), written to the store,
then applied to this gateway's router at once (other gateways pick it up on their next sync).
Views never hold a credential: a replica shows only whether it has one, and its URL with
query values and user information masked (``inferd.redact``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Literal, TypedDict
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, field_validator

from inferd.audit import AuditLog
from inferd.engines.residency import Resident
from inferd.errors import Conflict, InferdError, InvalidRequest, NotFound
from inferd.jsontypes import JsonObject, JsonValue
from inferd.numerals import ascii_int
from inferd.prices import Price, check_price, parse_price
from inferd.redact import MASK, redact_url
from inferd.routing.catalog import ReplicaCatalog, build_remote_engine, probe
from inferd.routing.replica import Replica, ReplicaState
from inferd.settings import ReplicaSpec, Routing, check_capacity, check_headers, check_metrics
from inferd.store.replicas import ModelRecord, ReplicaRecord, ReplicaStore

Name = Field(min_length=1, max_length=191)


class ModelCreate(BaseModel):
    """Body of a model creation."""

    name: str = Name
    aliases: list[str] = Field(default_factory=list, max_length=50)
    fallbacks: list[str] = Field(default_factory=list, max_length=10)
    replicas: list[ReplicaSpec] = Field(default_factory=list, max_length=100)
    # How its replicas are chosen; left out: the server's default (``INFERD_ROUTING``).
    routing: Routing | None = None
    # What it costs (docs/operating/prices.md); left out: nothing.
    price: Price | None = None


class ModelUpdate(BaseModel):
    """Body of a model update (fields left out are kept)."""

    aliases: list[str] | None = Field(default=None, max_length=50)
    fallbacks: list[str] | None = Field(default=None, max_length=10)
    active: bool | None = None
    # "default" goes back to the server's default.
    routing: Literal["prefix", "least_busy", "weighted", "default"] | None = None
    # A new price (replaces the old one whole); ``null`` removes it.
    price: Price | None = None


class ReplicaCreate(ReplicaSpec):
    """Body of ``POST /admin/v1/replicas``: a replica and the model it serves."""

    model: str = Name


class ReplicaUpdate(BaseModel):
    """Body of a replica update (fields left out are kept; ``api_key: ""`` removes it). A
    ``url`` on another host (scheme, host or port) needs ``api_key`` too when the replica has
    a credential: it was given for the old host, and is not sent to a new one unasked."""

    url: str | None = Field(default=None, min_length=1, max_length=2048)
    upstream_model: str | None = Field(default=None, max_length=255)
    api_key: str | None = Field(default=None, max_length=4096, repr=False)
    weight: float | None = Field(default=None, gt=0.0, le=1000.0)
    timeout: float | None = Field(default=None, gt=0.0, le=86400.0)
    enabled: bool | None = None
    options: JsonObject | None = None

    @field_validator("options")
    @classmethod
    def headers_are_valid(cls, options: JsonObject | None) -> JsonObject | None:
        return check_capacity(check_metrics(check_price(check_headers(options))))


# The largest id a BIGINT column holds; a larger number names no row (and must not reach the
# database driver, which would fail on it).
MAX_ROW_ID = 2**63 - 1


def _row_id(text: str) -> int | None:
    """``text`` as a row id, or None when it is not one."""
    value = ascii_int(text)
    return value if value is not None and value <= MAX_ROW_ID else None


def origin(url: str) -> tuple[str, str, int | None]:
    """Where ``url`` sends requests, and so its credential: scheme, host and port."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    return (parts.scheme.lower(), (parts.hostname or "").rstrip("."),
            port or {"http": 80, "https": 443}.get(parts.scheme.lower()))


class _Unplaced(TypedDict):
    """The state shown for a stored replica this gateway does not route (disabled, or its
    model inactive or not synced yet)."""

    healthy: bool
    available: bool
    in_flight: int
    cooled_down_until: None
    consecutive_failures: int
    cooldown_seconds: float
    last_error: None
    last_error_at: None
    latency_ms: None
    requests: int
    errors: int
    checking: bool
    running: None
    waiting: None
    kv_cache_usage: None
    load_read_at: None
    not_loaded: str


class _Stored(TypedDict):
    """A stored replica's settings as its view shows them."""

    id: str
    model: str
    model_id: int
    kind: str
    url: str
    upstream_model: str
    weight: float
    timeout: float
    enabled: bool
    options: JsonObject
    has_api_key: bool
    source: str
    created_at: float
    updated_at: float


class LocalView(ReplicaState):
    """A replica the router holds but the store does not (a local engine)."""

    model_id: None
    url: None
    upstream_model: None
    enabled: bool
    has_api_key: bool
    source: str
    state: str  # loaded, loading or unloaded
    loadable: bool


class PlacedView(ReplicaState, _Stored):
    """A stored replica this gateway routes: its live state and its settings."""


class UnplacedView(_Unplaced, _Stored):
    """A stored replica this gateway does not route: why, and its settings."""


ReplicaView = LocalView | PlacedView | UnplacedView


class ModelView(TypedDict):
    """A model as the admin API shows it."""

    id: int
    name: str
    object: Literal["model"]
    aliases: list[str]
    fallbacks: list[str]
    routing: str
    routing_default: bool
    active: bool
    source: str
    price: dict[str, float | None] | None
    healthy: bool
    queued: int
    state: str | None
    loadable: bool
    replicas: list[ReplicaView]
    created_at: float
    updated_at: float


class ModelDeleted(TypedDict):
    id: int
    name: str
    object: Literal["model"]
    deleted: Literal[True]


class ReplicaDeleted(TypedDict):
    id: str
    object: Literal["replica"]
    deleted: Literal[True]


class ReplicaTest(TypedDict):
    """What ``test_replica`` found."""

    object: Literal["replica.test"]
    ok: bool
    error: str | None
    warning: str | None
    models: list[str]
    latency_ms: float


def shown_options(options: Mapping[str, JsonValue]) -> JsonObject:
    """A replica's options as views show them: URLs (``health_url``) masked."""
    return {k: redact_url(v) if k.endswith("url") and isinstance(v, str) else v
            for k, v in options.items()}


def unmasked_options(sent: Mapping[str, JsonValue], stored: Mapping[str, JsonValue]
                     ) -> JsonObject:
    """``sent`` with each URL that is the masked form of the stored one set back to it."""
    return {k: stored[k] if (isinstance(v, str) and isinstance(stored.get(k), str)
                             and v != stored[k] and v == shown_options(stored)[k]) else v
            for k, v in sent.items()}


def live_view(replica: Replica) -> LocalView:
    """A replica the router holds but the store does not (a local engine), with its memory
    state: ``loaded`` / ``loading`` / ``unloaded`` (engines without weights to load: loaded)."""
    engine = replica.engine
    state = engine.state if isinstance(engine, Resident) else "loaded"
    return {**replica.state(), "model_id": None, "url": None, "upstream_model": None,
            "enabled": True, "has_api_key": False, "source": "local", "state": state,
            "loadable": isinstance(engine, Resident)}


# A model served in this process is as loaded as its most loaded replica.
STATES = ("loaded", "loading", "unloaded")


def _price_view(stored: Mapping[str, JsonValue] | None) -> dict[str, float | None] | None:
    """A model's stored price as views show it (None: none, or one that no longer
    validates)."""
    try:
        price = parse_price(stored)
    except ValueError:
        return None
    return None if price is None else price.view()


def memory_state(local: list[LocalView]) -> str | None:
    """The model's memory state, from the views of its in-process replicas; None when it
    has none (it runs elsewhere)."""
    states = {r["state"] for r in local}
    return next((s for s in STATES if s in states), None)


class ModelAdmin:
    """Model and replica management on top of the store and the live catalogue."""

    def __init__(self, store: ReplicaStore, catalog: ReplicaCatalog, *,
                 audit: AuditLog | None = None) -> None:
        self.store = store
        self.catalog = catalog
        self.router = catalog.router
        self.audit = audit  # records every change (``inferd.audit``)

    async def _record(self, action: str, kind: str, object_id: object,
                      before: dict[str, object] | None, after: dict[str, object] | None
                      ) -> None:
        if self.audit is not None:
            await self.audit.record(action, kind, object_id, before=before, after=after)

    @staticmethod
    def _stored(view: Mapping[str, object]) -> dict[str, object]:
        """What the audit log keeps of a view (a ``ModelView`` or a ``ReplicaView``): the
        stored settings, not the live state."""
        live = {"healthy", "available", "in_flight", "cooled_down_until", "consecutive_failures",
                "cooldown_seconds", "last_error", "last_error_at", "latency_ms", "requests",
                "errors", "not_loaded", "state", "loadable", "running", "waiting",
                "kv_cache_usage", "load_read_at"}
        kept = {k: v for k, v in view.items() if k not in live}
        replicas = kept.get("replicas")
        if isinstance(replicas, list):
            kept["replicas"] = [ModelAdmin._stored(r) for r in replicas]
        return kept

    # -- views ----------------------------------------------------------------------------
    def replica_view(self, record: ReplicaRecord) -> ReplicaView:
        live = self.router.replica(str(record.id))
        stored: _Stored = {
            "id": str(record.id), "model": record.model, "model_id": record.model_id,
            "kind": record.kind, "url": redact_url(record.url),
            "upstream_model": record.upstream_model, "weight": record.weight,
            "timeout": record.timeout, "enabled": record.enabled,
            "options": shown_options(record.options), "has_api_key": record.has_credential,
            "source": record.source, "created_at": record.created_at,
            "updated_at": record.updated_at}
        if live is not None:
            return {**live.state(), **stored}
        unplaced: _Unplaced = {
            "healthy": False, "available": False, "in_flight": 0, "cooled_down_until": None,
            "consecutive_failures": 0, "cooldown_seconds": 0.0, "last_error": None,
            "last_error_at": None, "latency_ms": None, "requests": 0, "errors": 0,
            "checking": False, "running": None, "waiting": None, "kv_cache_usage": None,
            "load_read_at": None,
            "not_loaded": "disabled" if not record.enabled else "refused or inactive"}
        return {**unplaced, **stored}

    async def model_view(self, record: ModelRecord) -> ModelView:
        """The model as this gateway serves it: its routing is the one its router applies
        (a change made on another gateway shows once this one has synced), else the stored."""
        stored = [self.replica_view(r) for r in await self.store.list_replicas(record.id)]
        routing: str | None
        try:
            routing = self.router.set_routing(record.name)
        except KeyError:  # not routed here (inactive, or not synced yet)
            routing = record.routing
        local = [live_view(r) for r in self.router.replicas()
                 if r.model == record.name and r.kind == "local"]
        replicas = local + stored
        return {"id": record.id, "name": record.name, "object": "model",
                "aliases": record.aliases, "fallbacks": record.fallbacks,
                "routing": routing or self.router.routing,
                "routing_default": routing is None,
                "active": record.active, "source": record.source,
                "price": _price_view(record.price),
                "healthy": any(r["available"] for r in replicas),
                # requests waiting in this gateway's fair queue for the model
                "queued": self.router.queue.depth(record.name),
                "state": memory_state(local),
                "loadable": any(r["loadable"] for r in local), "replicas": replicas,
                "created_at": record.created_at, "updated_at": record.updated_at}

    # -- models ---------------------------------------------------------------------------
    async def models(self, active: bool | None = None) -> list[ModelView]:
        records = await self.store.list_models()
        return [await self.model_view(r) for r in records
                if active is None or r.active == active]

    async def find_model(self, ref: str) -> ModelRecord:
        """A model by id, name or alias; 404 otherwise."""
        row_id = _row_id(ref)
        record = await self.store.get_model(row_id) if row_id is not None else None
        if record is None:
            record = await self.store.find_model(ref)
        if record is None:
            for candidate in await self.store.list_models():
                if ref in candidate.aliases:
                    return candidate
            raise NotFound(f"No model '{ref}'.", code="model_not_found")
        return record

    async def _check_names(self, name: str, aliases: list[str], fallbacks: list[str]) -> None:
        taken: dict[str, str] = {}
        for other in await self.store.list_models():
            if other.name != name:
                taken[other.name] = other.name
                taken.update({alias: other.name for alias in other.aliases})
        for alias in aliases:
            if not alias or len(alias) > 191:
                raise InvalidRequest("Aliases must be 1 to 191 characters.", param="aliases")
            if alias in taken or alias == name:
                raise Conflict(f"'{alias}' already names model '{taken.get(alias, name)}'.")
        if name in fallbacks:
            raise InvalidRequest("A model cannot fall back to itself.", param="fallbacks")

    async def create_model(self, body: ModelCreate) -> ModelView:
        await self._check_names(body.name, body.aliases, body.fallbacks)
        if await self.store.find_model(body.name) is not None:
            raise Conflict(f"A model named '{body.name}' already exists.")
        for replica in body.replicas:
            await self.catalog.check(replica.url, replica.options, replica.kind)
        record = await self.store.create_model(
            body.name, body.aliases, body.fallbacks, routing=body.routing,
            price=None if body.price is None else body.price.view())
        for replica in body.replicas:
            await self.store.create_replica(record.id, replica)
        await self.catalog.changed()
        view = await self.model_view(record)
        await self._record("model.create", "model", record.id, None, self._stored(view))
        return view

    async def update_model(self, ref: str, body: ModelUpdate) -> ModelView:
        record = await self.find_model(ref)
        await self._check_names(record.name, body.aliases if body.aliases is not None
                                else record.aliases, body.fallbacks or [])
        before = self._stored(await self.model_view(record))
        price: dict[str, float | None] | None = None
        if "price" in body.model_fields_set:  # null: removed
            price = {} if body.price is None else body.price.view()
        updated = await self.store.update_model(record.id, aliases=body.aliases,
                                                fallbacks=body.fallbacks, active=body.active,
                                                routing=body.routing, price=price)
        assert updated is not None
        await self.catalog.changed()
        view = await self.model_view(updated)
        sent = body.model_dump(exclude_unset=True)
        action = ("model.enable" if sent == {"active": True} else
                  "model.disable" if sent == {"active": False} else "model.update")
        await self._record(action, "model", record.id, before, self._stored(view))
        return view

    async def delete_model(self, ref: str) -> ModelDeleted:
        record = await self.find_model(ref)
        if any(r.model == record.name and r.kind == "local" for r in self.router.replicas()):
            raise Conflict(f"Model '{record.name}' runs on a local engine of this process; "
                           "remove it from the configuration instead.")
        before = self._stored(await self.model_view(record))
        await self.store.delete_model(record.id)
        await self.catalog.changed()
        await self._record("model.delete", "model", record.id, before, None)
        return {"id": record.id, "name": record.name, "object": "model", "deleted": True}

    # -- replicas -------------------------------------------------------------------------
    async def replicas(self, model_id: int | None = None) -> list[ReplicaView]:
        views = [self.replica_view(r) for r in await self.store.list_replicas(model_id)]
        if model_id is None:
            views = [live_view(r) for r in self.router.replicas() if r.kind == "local"] + views
        return views

    async def replica(self, replica_id: str) -> ReplicaView:
        row_id = _row_id(replica_id)
        if row_id is not None:
            record = await self.store.get_replica(row_id)
            if record is not None:
                return self.replica_view(record)
        live = self.router.replica(replica_id)
        if live is not None and live.kind == "local":
            return live_view(live)
        raise NotFound(f"No replica '{replica_id}'.", code="replica_not_found")

    async def create_replica(self, model_ref: str, spec: ReplicaSpec) -> ReplicaView:
        model = await self.find_model(model_ref)
        await self.catalog.check(spec.url, spec.options, spec.kind)
        record = await self.store.create_replica(model.id, spec)
        await self.catalog.changed()
        view = self.replica_view(record)
        await self._record("replica.create", "replica", record.id, None, self._stored(view))
        return view

    async def update_replica(self, replica_id: str, body: ReplicaUpdate) -> ReplicaView:
        changes = body.model_dump(exclude_unset=True)
        for field, value in list(changes.items()):
            if value is None and field != "api_key":
                raise InvalidRequest(f"'{field}' cannot be null.", param=field)
        record = None
        row_id = _row_id(replica_id)
        current = await self.store.get_replica(row_id) if row_id is not None else None
        if current is not None:  # masked URLs a view showed, sent back: keep the real ones
            if changes.get("url") == redact_url(current.url):
                del changes["url"]
            if changes.get("options"):
                changes["options"] = unmasked_options(changes["options"], current.options)
        if (current is not None and changes.get("url") and current.has_credential
                and "api_key" not in changes and origin(changes["url"]) != origin(current.url)):
            raise InvalidRequest(
                "This replica's upstream credential was given for "
                f"'{redact_url(current.url)}'; a URL on another host must come with its "
                "credential again: send 'api_key' with the new 'url' (\"\" for none).",
                param="api_key", code="api_key_required")
        headers = (None if current is None
                   else (changes.get("options") or current.options).get("headers"))
        if (current is not None and changes.get("url") and current.options.get("headers")
                and origin(changes["url"]) != origin(current.url)
                and MASK in (headers.values() if isinstance(headers, dict) else ())):
            raise InvalidRequest(
                "This replica's headers were given for "
                f"'{redact_url(current.url)}'; a URL on another host must come with their "
                "values again: send 'options.headers' with the new 'url' ({} for none).",
                param="options.headers", code="headers_required")
        if current is not None and (changes.get("url") or changes.get("options")):
            await self.catalog.check(changes.get("url") or current.url,
                                     changes.get("options", current.options), current.kind)
        if row_id is not None:
            record = await self.store.update_replica(row_id, changes)
        if record is None:
            raise NotFound(f"No replica '{replica_id}'.", code="replica_not_found")
        await self.catalog.changed()
        view = self.replica_view(record)
        action = ("replica.enable" if changes == {"enabled": True} else
                  "replica.disable" if changes == {"enabled": False} else "replica.update")
        await self._record(action, "replica", record.id,
                           None if current is None else self._stored(self.replica_view(current)),
                           self._stored(view))
        return view

    async def test_replica(self, spec: ReplicaSpec) -> ReplicaTest:
        """Reach a replica before saving it: its health check and the models it lists (an
        ``http`` server's ``/v1/models``), through the same allow-list as a saved one."""
        if spec.kind == "queue":
            raise InvalidRequest("A queue replica is registered by its workers: there is no "
                                 "URL to test.", param="kind")
        await self.catalog.check(spec.url, spec.options)
        engine = build_remote_engine(spec.upstream_model or "test", spec, self.catalog.allow)
        started = time.perf_counter()
        await engine.start()
        models: list[str] = []
        try:
            error = await probe(engine)
            if error is None:
                try:
                    models = await engine.upstream_models()
                except InferdError as exc:
                    error = exc.message
        finally:
            await engine.close()
        warning = None
        if error is None and models and spec.upstream_model and spec.upstream_model not in models:
            warning = f"The upstream does not list '{spec.upstream_model}'."
        return {"object": "replica.test", "ok": error is None, "error": error,
                "warning": warning, "models": models,
                "latency_ms": round((time.perf_counter() - started) * 1000, 1)}

    async def delete_replica(self, replica_id: str) -> ReplicaDeleted:
        row_id = _row_id(replica_id)
        current = await self.store.get_replica(row_id) if row_id is not None else None
        if row_id is None or not await self.store.delete_replica(row_id):
            raise NotFound(f"No replica '{replica_id}'.", code="replica_not_found")
        await self.catalog.changed()
        await self._record("replica.delete", "replica", row_id,
                           None if current is None else self._stored(self.replica_view(current)),
                           None)
        return {"id": replica_id, "object": "replica", "deleted": True}
