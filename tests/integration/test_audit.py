"""The audit log on real stores (SQLite, PostgreSQL, MariaDB): events appended by the
services that change the control plane, secrets masked, paged with filters, kept when the
database refuses them for a moment, pruned past the retention, never updated."""

from __future__ import annotations

import inspect
import time
from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa

from inferd.audit import Actor, AuditLog, acting_as
from inferd.auth.admin import KeyAdmin, KeySpec, KeyUpdate
from inferd.engines.echo import EchoEngine
from inferd.outbound import HostAllowList
from inferd.routing.catalog import ReplicaCatalog
from inferd.routing.manage import ModelAdmin, ModelCreate, ReplicaUpdate
from inferd.routing.replica import Replica
from inferd.routing.router import Router
from inferd.settings import ModelSpec, ReplicaSpec
from inferd.store.audit import AuditQuery, AuditStore
from inferd.store.db import Database
from inferd.store.keys import KeyStore
from inferd.store.replicas import ReplicaStore

UPSTREAM_SECRET = "sk-upstream-secret-value"
ADMIN = Actor(key_id="7", name="ops", scope="admin", address="10.0.0.9", request_id="req-1")


@pytest.fixture
def audit(database: Database) -> AuditLog:
    return AuditLog(AuditStore(database), retention_days=30, failure_window=60)


async def events(audit: AuditLog, **filters: object) -> list[dict[str, object]]:
    page = await audit.page(AuditQuery(**filters), limit=1000)  # type: ignore[arg-type]
    data: list[dict[str, object]] = page["data"]
    return data


@pytest.fixture
async def models(database: Database, audit: AuditLog) -> AsyncIterator[ModelAdmin]:
    router = Router()
    router.add(
        Replica(
            id="local:echo", model="echo", engine=EchoEngine(ModelSpec(name="echo", kind="echo"))
        )
    )
    store = ReplicaStore(database)
    catalog = ReplicaCatalog(
        router,
        store,
        HostAllowList(["127.0.0.0/8"]),
        interval=3600,
        cooldown_base=1.0,
        cooldown_max=60.0,
    )
    yield ModelAdmin(store, catalog, audit=audit)
    await catalog.close()


async def test_key_changes_are_recorded_without_the_key_or_its_webhook_secret(
    database: Database, audit: AuditLog
) -> None:
    admin = KeyAdmin(KeyStore(database), audit=audit)
    with acting_as(ADMIN):
        created = await admin.create(KeySpec(name="svc", owner="ann", rpm=5))
        key_id = created["id"]
        await admin.update(key_id, KeyUpdate(rpm=10, team="blue"))
        await admin.disable(key_id)
        await admin.update(key_id, KeyUpdate(enabled=True))
        await admin.update(key_id, KeyUpdate())  # no change: no event
        await admin.delete(key_id)
    found = await events(audit, object_type="api_key", object_id=str(key_id))
    assert [e["action"] for e in found] == [
        "key.delete",
        "key.enable",
        "key.disable",
        "key.update",
        "key.create",
    ]
    update = found[3]
    assert update["before"]["rpm"] == 5 and update["after"]["rpm"] == 10  # type: ignore[index]
    assert update["after"]["team"] == "blue"  # type: ignore[index]
    assert found[0]["after"] is None and found[0]["before"]["name"] == "svc"  # type: ignore[index]
    assert found[-1]["actor"] == {
        "key_id": "7",
        "name": "ops",
        "scope": "admin",
        "user": None,
        "via": "api",
    }
    assert {e["client_address"] for e in found} == {"10.0.0.9"}
    assert {e["request_id"] for e in found} == {"req-1"}
    stored = repr(found)
    assert created["key"] not in stored and created["webhook_secret"] not in stored
    row = await KeyStore(database).get(key_id)
    assert row is None  # deleted, yet its history stays


async def test_model_and_replica_changes_are_recorded_without_the_upstream_credential(
    models: ModelAdmin, audit: AuditLog
) -> None:
    url = "http://127.0.0.1:9/v1?token=abc123"
    with acting_as(ADMIN):
        model = await models.create_model(
            ModelCreate(name="llama", aliases=[], fallbacks=[], replicas=[])
        )
        replica = await models.create_replica(
            "llama",
            ReplicaSpec(
                url=url, api_key=UPSTREAM_SECRET, options={"headers": {"X-Api-Key": "hdr-secret"}}
            ),
        )
        await models.update_replica(replica["id"], ReplicaUpdate(weight=2.5))
        await models.update_replica(replica["id"], ReplicaUpdate(enabled=False))
        await models.delete_replica(replica["id"])
        await models.delete_model(str(model["id"]))
    found = await events(audit)
    assert [e["action"] for e in found] == [
        "model.delete",
        "replica.delete",
        "replica.disable",
        "replica.update",
        "replica.create",
        "model.create",
    ]
    stored = repr(found)
    for secret in (UPSTREAM_SECRET, "abc123", "hdr-secret"):
        assert secret not in stored
    created = found[4]["after"]
    assert created["has_api_key"] is True  # type: ignore[index]
    assert created["options"]["headers"]["X-Api-Key"] == "***"  # type: ignore[index]
    assert found[3]["before"]["weight"] == 1.0  # type: ignore[index]
    assert found[3]["after"]["weight"] == 2.5  # type: ignore[index]
    assert "in_flight" not in created  # live state is no change: not recorded


async def test_pages_filter_and_follow_the_cursor(audit: AuditLog) -> None:
    for i in range(7):
        with acting_as(Actor(key_id=str(i % 2), name="k", scope="admin")):
            await audit.record(
                "key.create" if i % 3 else "model.update",
                "api_key" if i % 3 else "model",
                i,
                after={"n": i},
            )
    seen: list[str] = []
    after = None
    while True:
        page = await audit.page(AuditQuery(), after=after, limit=3)
        seen += [e["id"] for e in page["data"]]
        if not page["has_more"]:
            break
        after = int(page["last_id"])
    assert len(seen) == 7 and seen == sorted(seen, key=int, reverse=True)
    assert len(await events(audit, action="key.create")) == 4
    assert len(await events(audit, action="key.")) == 4
    assert len(await events(audit, action="model.update", actor="0")) == 2
    assert [e["object_id"] for e in await events(audit, object_type="model", object_id="3")] == [
        "3"
    ]
    everything = await events(audit)
    middle = float(everything[3]["created_at"])  # type: ignore[arg-type]
    newer = await events(audit, since=middle)
    older = await events(audit, until=middle)
    assert len(newer) + len(older) == 7 and newer and older
    exported = [e async for e in audit.export(AuditQuery(), size=2)]
    assert [e["id"] for e in exported] == seen


async def test_an_event_the_database_refused_is_written_later(
    database: Database, audit: AuditLog
) -> None:
    """The table away for a moment (renamed): the event is kept and written by the next
    tick, once the table is back."""
    async with database.engine.begin() as conn:
        await conn.execute(sa.text("ALTER TABLE audit_events RENAME TO audit_events_away"))
    try:
        assert await audit.record("key.create", "api_key", 1, after={"name": "x"}) is False
        assert len(audit.pending) == 1
    finally:
        async with database.engine.begin() as conn:
            await conn.execute(sa.text("ALTER TABLE audit_events_away RENAME TO audit_events"))
    await audit.tick()
    assert audit.pending == []
    assert [e["action"] for e in await events(audit)] == ["key.create"]


async def test_a_flood_of_refused_keys_writes_one_event_per_address_and_window(
    audit: AuditLog,
) -> None:
    for _ in range(5000):
        audit.refused("auth.failed", "203.0.113.5", "invalid_api_key")
    for _ in range(3):
        audit.refused(
            "auth.denied", "203.0.113.6", "admin_scope_required", key_id="42", path="/admin/v1/keys"
        )
    await audit.tick()
    found = await events(audit)
    assert len(found) == 2
    failed = next(e for e in found if e["action"] == "auth.failed")
    assert failed["object_id"] == "203.0.113.5"
    assert failed["after"]["count"] == 5000  # type: ignore[index]
    assert failed["after"]["code"] == "invalid_api_key"  # type: ignore[index]
    denied = next(e for e in found if e["action"] == "auth.denied")
    assert denied["actor"]["key_id"] == "42"  # type: ignore[index]
    assert denied["after"]["path"] == "/admin/v1/keys"  # type: ignore[index]
    await audit.tick()  # nothing new: nothing written
    assert len(await events(audit)) == 2


async def test_many_addresses_are_bounded(audit: AuditLog) -> None:
    for i in range(1500):
        audit.refused("auth.failed", f"198.51.{i // 256}.{i % 256}", "invalid_api_key")
    await audit.tick()
    assert await audit.store.count() == 1001  # 1,000 addresses, the rest under "*"
    [rest] = await events(audit, object_id="*")
    assert rest["after"]["count"] == 500  # type: ignore[index]


async def test_retention_removes_only_old_events(database: Database, audit: AuditLog) -> None:
    store = AuditStore(database)
    now = time.time()
    await store.append(
        [
            {
                "created_at": now - 40 * 86400,
                "action": "key.create",
                "object_type": "api_key",
                "actor_name": "",
                "via": "api",
            },
            {
                "created_at": now - 10 * 86400,
                "action": "key.update",
                "object_type": "api_key",
                "actor_name": "",
                "via": "api",
            },
        ]
    )
    assert await audit.prune(now) == 1
    assert [e["action"] for e in await events(audit)] == ["key.update"]
    forever = AuditLog(store, retention_days=0)
    assert await forever.prune(now + 1e9) == 0
    assert await store.count() == 1


def test_the_store_and_the_log_offer_no_way_to_change_an_event() -> None:
    """Append-only: the only ways to write are appending and pruning past the retention."""
    for cls, allowed in (
        (AuditStore, {"append", "prune", "page", "count"}),
        (
            AuditLog,
            {
                "record",
                "flush",
                "refused",
                "take_failures",
                "tick",
                "run",
                "start",
                "close",
                "prune",
                "page",
                "export",
            },
        ),
    ):
        methods = {
            name
            for name, _ in inspect.getmembers(cls, inspect.isfunction)
            if not name.startswith("_")
        }
        assert methods == allowed, cls
