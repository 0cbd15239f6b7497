"""The migrations and the store work the same on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa

from inferd.store.db import Database, downgrade, upgrade
from inferd.store.jobs_contexts import ContextStore
from inferd.store.repo import KeyValueStore
from inferd.store.tables import kv, metadata, tables_jobs


async def test_migrations_create_every_table(database: Database) -> None:
    async with database.engine.connect() as conn:
        names = await conn.run_sync(lambda c: set(sa.inspect(c).get_table_names()))
    assert set(metadata.tables) <= names
    assert "alembic_version" in names


async def test_migrations_downgrade_and_upgrade_again(database: Database) -> None:
    await asyncio.to_thread(downgrade, database.url, "base")
    async with database.engine.connect() as conn:
        names = await conn.run_sync(lambda c: set(sa.inspect(c).get_table_names()))
    assert not (set(metadata.tables) & names)
    await asyncio.to_thread(upgrade, database.url)
    async with database.engine.connect() as conn:
        names = await conn.run_sync(lambda c: set(sa.inspect(c).get_table_names()))
    assert set(metadata.tables) <= names


async def test_migration_0013_renames_what_the_replaced_systems_apis_store(
        database: Database) -> None:
    """Contexts, the sources of the jobs the replaced systems' APIs started and the model host's
    stored state take their descriptive names, keeping their rows; the downgrade names them
    back. A context stored after the upgrade gets the next id."""
    await asyncio.to_thread(downgrade, database.url, "0012")
    jobs = tables_jobs.jobs
    job = {"owner": "7", "owner_scope": "key", "endpoint": "/v1/chat/completions",
           "model": "echo", "status": "completed", "request": {}, "request_hash": "h",
           "created_at": 1.0}
    async with database.engine.begin() as conn:
        await conn.execute(sa.table("s0_contexts", sa.column("id"), sa.column("owner"),
                                    sa.column("content"), sa.column("created_at"))
                           .insert().values(owner="7", content="stored", created_at=1.0))
        await conn.execute(jobs.insert(), [
            {**job, "id": "j-context", "source": "s0"}, {**job, "id": "j-queued", "source": "s1"},
            {**job, "id": "j-api", "source": "api"}])
        await conn.execute(kv.insert(), [
            {"key": "s4.current", "value": "{}", "updated_at": 1.0},
            {"key": "s4.current:7", "value": '{"model": "echo"}', "updated_at": 1.0},
            {"key": "instance", "value": "x", "updated_at": 1.0}])

    async def stored() -> tuple[set[str], list[tuple[str, str]], dict[str, str]]:
        async with database.engine.connect() as conn:
            names = await conn.run_sync(lambda c: set(sa.inspect(c).get_table_names()))
            sources = (await conn.execute(sa.select(jobs.c.id, jobs.c.source)
                                          .order_by(jobs.c.id))).all()
            keys = dict((await conn.execute(sa.select(kv.c.key, kv.c.value))).all())
        return names, [tuple(row) for row in sources], keys

    await asyncio.to_thread(upgrade, database.url)
    names, sources, keys = await stored()
    assert "compat_contexts" in names and "s0_contexts" not in names
    assert sources == [("j-api", "api"), ("j-context", "contexts"), ("j-queued", "queued")]
    assert keys == {"model-host.current": "{}", "model-host.current:7": '{"model": "echo"}',
                    "instance": "x"}
    contexts = ContextStore(database)
    [first] = await contexts.all(None, True)
    assert (first.owner, first.content) == ("7", "stored")
    assert (await contexts.create("7", "next")).id > first.id

    await asyncio.to_thread(downgrade, database.url, "0012")
    names, sources, keys = await stored()
    assert "s0_contexts" in names and "compat_contexts" not in names
    assert sources == [("j-api", "api"), ("j-context", "s0"), ("j-queued", "s1")]
    assert keys == {"s4.current": "{}", "s4.current:7": '{"model": "echo"}', "instance": "x"}
    await asyncio.to_thread(upgrade, database.url)
    assert [c.content for c in await contexts.all(None, True)] == ["stored", "next"]


async def test_kv_store_round_trip_and_race_safe_setdefault(database: Database) -> None:
    store = KeyValueStore(database)
    assert await store.get("missing") is None
    await store.set("instance", "a")
    await store.set("instance", "b")
    assert await store.get("instance") == "b"
    results = await asyncio.gather(*(store.setdefault("boot", f"v{i}") for i in range(5)))
    assert len(set(results)) == 1
    assert await store.get("boot") == results[0]


async def test_kv_store_concurrent_first_writes_all_succeed(database: Database) -> None:
    """Several writers store the same new keys at once: none fails, one value wins."""
    store = KeyValueStore(database)
    keys = [f"fact-{k}" for k in range(5)]
    await asyncio.gather(*(store.set(key, f"v{i}") for i in range(6) for key in keys))
    for key in keys:
        assert await store.get(key) in {f"v{i}" for i in range(6)}
    await store.set(keys[0], "last")
    assert await store.get(keys[0]) == "last"


async def test_ping(database: Database) -> None:
    assert await database.ping()
