"""The migrations and the store work the same on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa

from inferd.store.db import Database, downgrade, upgrade
from inferd.store.repo import KeyValueStore
from inferd.store.tables import metadata


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
