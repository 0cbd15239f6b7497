"""Repository of models, replicas and replica credentials (all their SQL).

Reads for the API never touch ``replica_security_rules.secret``; only ``catalogue()`` (which
builds the engines) reads it. Credentials are stored encrypted (``Database.secrets``). A replica
URL that carries secrets (a query string, ``user:pass@``) is stored masked in ``replicas.url``
(what views and ``/tables`` show) and whole, encrypted, as a security rule ``url``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from inferd.errors import Conflict, InvalidRequest
from inferd.jsontypes import JsonObject
from inferd.redact import MASK, redact_url
from inferd.settings import RemoteModelSpec, ReplicaSpec
from inferd.store import heartbeats
from inferd.store.db import Database
from inferd.store.tables_replicas import llm_models, replica_security_rules, replicas

BEARER = "bearer_token"
FULL_URL = "url"  # the whole replica URL, when ``replicas.url`` holds it masked
HEADERS = "headers"  # ``options.headers`` (JSON), kept here while ``replicas.options`` masks it


def _masked_headers(options: JsonObject) -> tuple[JsonObject, str]:
    """``options`` as stored (each header value masked) and its headers as the secret to
    keep ("" when there are none)."""
    headers = options.get("headers")
    if not headers:
        return {k: v for k, v in options.items() if k != "headers"}, ""
    if not isinstance(headers, dict):  # ``ReplicaSpec`` refuses it
        raise TypeError("options.headers must be an object")
    return ({**options, "headers": dict.fromkeys(headers, MASK)},
            json.dumps(headers, sort_keys=True))


@dataclass
class ModelRecord:
    """A row of ``llm_models``."""

    id: int
    name: str
    aliases: list[str]
    fallbacks: list[str]
    active: bool
    source: str
    created_at: float
    updated_at: float
    routing: str | None = None  # None: the server's default
    price: dict[str, float | None] | None = None  # ``Price.view()``; None: no price


@dataclass
class ReplicaRecord:
    """A row of ``replicas``; ``api_key`` is filled only by ``catalogue()``."""

    id: int
    model_id: int
    model: str
    kind: str
    url: str
    upstream_model: str
    weight: float
    timeout: float
    enabled: bool
    options: JsonObject
    source: str
    has_credential: bool
    created_at: float
    updated_at: float
    api_key: str = field(default="", repr=False)

    def spec(self) -> ReplicaSpec:
        return ReplicaSpec.model_validate({
            "kind": self.kind, "url": self.url, "upstream_model": self.upstream_model,
            "api_key": self.api_key, "weight": self.weight, "timeout": self.timeout,
            "enabled": self.enabled, "options": self.options})


def _model(row: Any) -> ModelRecord:
    return ModelRecord(id=int(row.id), name=row.name, aliases=list(row.aliases or []),
                       fallbacks=list(row.fallbacks or []), active=bool(row.active),
                       source=row.source, created_at=row.created_at, updated_at=row.updated_at,
                       routing=row.routing, price=dict(row.price) if row.price else None)


_HAS_KEY = sa.exists().where(replica_security_rules.c.replica_id == replicas.c.id,
                             replica_security_rules.c.rule == BEARER)
_REPLICA_COLUMNS = [*replicas.c, llm_models.c.name.label("model_name"),
                    _HAS_KEY.label("has_credential")]


def _replica(row: Any) -> ReplicaRecord:
    return ReplicaRecord(
        id=int(row.id), model_id=int(row.model_id), model=row.model_name, kind=row.kind,
        url=row.url, upstream_model=row.upstream_model, weight=float(row.weight),
        timeout=float(row.timeout), enabled=bool(row.enabled), options=dict(row.options or {}),
        source=row.source, has_credential=bool(row.has_credential),
        created_at=row.created_at, updated_at=row.updated_at)


class ReplicaStore:
    """Create, read, update and delete models and replicas."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def _set_rule(self, conn: AsyncConnection, replica_id: int, rule: str,
                        secret: str) -> None:
        """Store ``secret`` (encrypted) as the replica's ``rule``; "" removes it."""
        await conn.execute(sa.delete(replica_security_rules).where(
            replica_security_rules.c.replica_id == replica_id,
            replica_security_rules.c.rule == rule))
        if secret:
            await conn.execute(sa.insert(replica_security_rules).values(
                replica_id=replica_id, rule=rule, secret=self.db.secrets.seal(secret),
                created_at=time.time()))

    async def _rule(self, conn: AsyncConnection, replica_id: int, rule: str) -> str:
        """The replica's ``rule`` secret, decrypted ("" when it has none)."""
        sealed = await conn.scalar(sa.select(replica_security_rules.c.secret).where(
            replica_security_rules.c.replica_id == replica_id,
            replica_security_rules.c.rule == rule))
        return self.db.secrets.open(str(sealed)) if sealed is not None else ""

    async def _set_url(self, conn: AsyncConnection, replica_id: int, url: str) -> None:
        """Keep the whole ``url`` among the secrets when its stored form is masked."""
        await self._set_rule(conn, replica_id, FULL_URL, url if redact_url(url) != url else "")

    # -- models ---------------------------------------------------------------------------
    async def list_models(self) -> list[ModelRecord]:
        async with self.db.engine.connect() as conn:
            rows = await conn.execute(sa.select(llm_models).order_by(llm_models.c.id))
        return [_model(r) for r in rows]

    async def get_model(self, model_id: int) -> ModelRecord | None:
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(
                sa.select(llm_models).where(llm_models.c.id == model_id))).first()
        return None if row is None else _model(row)

    async def find_model(self, name: str) -> ModelRecord | None:
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(
                sa.select(llm_models).where(llm_models.c.name == name))).first()
        return None if row is None else _model(row)

    async def create_model(self, name: str, aliases: list[str], fallbacks: list[str],
                           source: str = "api", routing: str | None = None,
                           price: dict[str, float | None] | None = None) -> ModelRecord:
        now = time.time()
        try:
            async with self.db.engine.begin() as conn:
                result = await conn.execute(sa.insert(llm_models).values(
                    name=name, aliases=aliases, fallbacks=fallbacks, active=True, source=source,
                    routing=routing, price=price or None, created_at=now, updated_at=now))
                model_id = _inserted_id(result)
        except sa.exc.IntegrityError as exc:
            raise Conflict(f"A model named '{name}' already exists.") from exc
        record = await self.get_model(model_id)
        assert record is not None
        return record

    async def update_model(self, model_id: int, **changes: Any) -> ModelRecord | None:
        """Change the given fields (None: kept); ``routing="default"`` clears the routing,
        ``price={}`` the price."""
        values = {k: v for k, v in changes.items()
                  if k in ("aliases", "fallbacks", "active", "routing", "price") and v is not None}
        if values.get("routing") == "default":
            values["routing"] = None
        if values.get("price") == {}:
            values["price"] = None
        if values:
            async with self.db.engine.begin() as conn:
                await conn.execute(sa.update(llm_models).where(llm_models.c.id == model_id)
                                   .values(**values, updated_at=time.time()))
        return await self.get_model(model_id)

    async def delete_model(self, model_id: int) -> bool:
        async with self.db.engine.begin() as conn:
            ids = sa.select(replicas.c.id).where(replicas.c.model_id == model_id)
            await conn.execute(sa.delete(replica_security_rules)
                               .where(replica_security_rules.c.replica_id.in_(ids)))
            await conn.execute(sa.delete(replicas).where(replicas.c.model_id == model_id))
            result = await conn.execute(sa.delete(llm_models).where(llm_models.c.id == model_id))
        return bool(result.rowcount)

    # -- replicas -------------------------------------------------------------------------
    async def list_replicas(self, model_id: int | None = None) -> list[ReplicaRecord]:
        query = (sa.select(*_REPLICA_COLUMNS)
                 .join(llm_models, llm_models.c.id == replicas.c.model_id)
                 .order_by(replicas.c.id))
        if model_id is not None:
            query = query.where(replicas.c.model_id == model_id)
        async with self.db.engine.connect() as conn:
            rows = await conn.execute(query)
        return [_replica(r) for r in rows]

    async def get_replica(self, replica_id: int) -> ReplicaRecord | None:
        query = (sa.select(*_REPLICA_COLUMNS)
                 .join(llm_models, llm_models.c.id == replicas.c.model_id)
                 .where(replicas.c.id == replica_id))
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else _replica(row)

    async def create_replica(self, model_id: int, spec: ReplicaSpec,
                             source: str = "api") -> ReplicaRecord:
        now = time.time()
        options, headers = _masked_headers(spec.options)
        async with self.db.engine.begin() as conn:
            result = await conn.execute(sa.insert(replicas).values(
                model_id=model_id, kind=spec.kind, url=redact_url(spec.url),
                upstream_model=spec.upstream_model, weight=spec.weight, timeout=spec.timeout,
                enabled=spec.enabled, options=options, source=source,
                created_at=now, updated_at=now))
            replica_id = _inserted_id(result)
            await self._set_rule(conn, replica_id, BEARER, spec.api_key)
            await self._set_url(conn, replica_id, spec.url)
            await self._set_rule(conn, replica_id, HEADERS, headers)
        record = await self.get_replica(replica_id)
        assert record is not None
        return record

    async def update_replica(self, replica_id: int, changes: dict[str, Any]
                             ) -> ReplicaRecord | None:
        """Apply ``changes`` (fields of ``ReplicaSpec``; ``api_key`` "" removes it). New
        ``options`` replace the old; a header whose value is the mask keeps its stored value."""
        values = {k: v for k, v in changes.items() if k in replicas.c and k != "id"}
        if values.get("url"):
            values["url"] = redact_url(values["url"])
        headers: str | None = None
        async with self.db.engine.begin() as conn:
            if values.get("options") is not None:
                given = dict(values["options"].get("headers") or {})
                kept = await self._rule(conn, replica_id, HEADERS)
                old = json.loads(kept) if kept else {}
                for name, value in given.items():
                    if value == MASK:
                        if name not in old:
                            raise InvalidRequest(f"options.headers.{name}: give its value "
                                                 "(the replica has no such header stored).",
                                                 param=f"options.headers.{name}")
                        given[name] = old[name]
                options = {**values["options"], "headers": given}
                values["options"], headers = _masked_headers(options)
            result = await conn.execute(sa.update(replicas).where(replicas.c.id == replica_id)
                                        .values(**values, updated_at=time.time()))
            if not result.rowcount:
                return None
            if "api_key" in changes:
                await self._set_rule(conn, replica_id, BEARER, changes["api_key"] or "")
            if values.get("url"):
                await self._set_url(conn, replica_id, changes["url"])
            if headers is not None:
                await self._set_rule(conn, replica_id, HEADERS, headers)
        return await self.get_replica(replica_id)

    async def delete_replica(self, replica_id: int) -> bool:
        async with self.db.engine.begin() as conn:
            await conn.execute(sa.delete(replica_security_rules)
                               .where(replica_security_rules.c.replica_id == replica_id))
            result = await conn.execute(sa.delete(replicas).where(replicas.c.id == replica_id))
        return bool(result.rowcount)

    async def catalogue(self) -> tuple[list[ModelRecord], list[ReplicaRecord]]:
        """Every model and replica, replicas with their credentials (to build engines)."""
        models = await self.list_models()
        records = await self.list_replicas()
        async with self.db.engine.connect() as conn:
            rows = await conn.execute(sa.select(replica_security_rules.c.replica_id,
                                                replica_security_rules.c.rule,
                                                replica_security_rules.c.secret))
            secrets = {(int(r.replica_id), str(r.rule)): self.db.secrets.open(str(r.secret))
                       for r in rows}
            live = await heartbeats.alive(conn)
        # a self-registered engine takes part only while it beats
        records = [r for r in records if r.source != "engine" or r.id in live]
        for record in records:
            record.api_key = secrets.get((record.id, BEARER), "")
            record.url = secrets.get((record.id, FULL_URL), record.url)
            if (record.id, HEADERS) in secrets:
                record.options = {**record.options,
                                  "headers": json.loads(secrets[(record.id, HEADERS)])}
        return models, records

    async def apply_config(self, specs: list[RemoteModelSpec]) -> None:
        """Make the database hold the config file's models; their config replicas are
        replaced by the file's (replicas added through the API are kept)."""
        for spec in specs:
            record = await self.find_model(spec.name)
            if record is None:
                try:
                    record = await self.create_model(
                        spec.name, spec.aliases, spec.fallbacks, source="config",
                        routing=spec.routing,
                        price=None if spec.price is None else spec.price.view())
                except Conflict:  # another gateway starting at the same time
                    record = await self.find_model(spec.name)
                    assert record is not None
            else:
                await self.update_model(record.id, aliases=spec.aliases,
                                        fallbacks=spec.fallbacks,
                                        routing=spec.routing or "default",
                                        price=None if spec.price is None else spec.price.view())
            existing = {(r.kind, r.url, r.upstream_model): r  # URLs as stored: masked
                        for r in await self.list_replicas(record.id) if r.source == "config"}
            for replica in spec.replicas:
                same = existing.pop((replica.kind, redact_url(replica.url),
                                     replica.upstream_model), None)
                if same is None:
                    await self.create_replica(record.id, replica, source="config")
                else:
                    await self.update_replica(same.id, replica.model_dump())
            for gone in existing.values():
                await self.delete_replica(gone.id)


def _inserted_id(result: Any) -> int:
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])



