"""Key identity on SQLite, PostgreSQL and MariaDB: ids are never reused (also across the
migration that made them so), display prefixes reveal at most a few characters of a key, and
the last usable admin key cannot be deleted, disabled, expired or demoted, even by two
concurrent changes."""

from __future__ import annotations

import asyncio
import time

import pytest
import sqlalchemy as sa

from inferd.auth.admin import KeyAdmin, KeySpec, KeyUpdate
from inferd.auth.keys import KEY_PREFIX, MIN_KEY_CHARS, SHOWN_CHARS, KeyRing
from inferd.errors import Conflict
from inferd.store.db import Database, upgrade
from inferd.store.keys import VERSION_KEY, KeyStore
from inferd.store.tables import kv
from inferd.store.tables_control import api_keys
from inferd.store.tables_jobs import jobs


async def test_a_deleted_keys_id_is_never_given_to_a_new_key(database: Database) -> None:
    admin = KeyAdmin(KeyStore(database))
    await admin.create(KeySpec(name="first", scope="admin"))
    second = await admin.create(KeySpec(name="second"))
    await admin.delete(second["id"])  # the highest id goes away
    third = await admin.create(KeySpec(name="third"))
    assert third["id"] > second["id"]


async def test_upgrade_moves_past_ids_that_still_own_objects(database_url: str) -> None:
    """A database made before ids were kept: the newest key was deleted but still owns a job.
    After the upgrade, a new key does not get its id."""
    await asyncio.to_thread(upgrade, database_url, "0007")
    db = Database(database_url)
    try:
        ids = []
        async with db.engine.begin() as conn:
            for n in (1, 2):
                result = await conn.execute(sa.insert(api_keys).values(
                    name=f"k{n}", key_hash=f"{n:064d}", prefix="sk-adminchosen-1",
                    scope="user", webhook_secret="s", created_at=time.time(),
                    updated_at=time.time()))
                ids.append(result.inserted_primary_key[0])
            await conn.execute(sa.insert(jobs).values(
                id="job_old", endpoint="/v1/chat/completions", model="m", status="completed",
                priority=0, request={}, request_hash="", owner=str(ids[1]), owner_scope="user",
                created_at=time.time()))
            await conn.execute(sa.delete(api_keys).where(api_keys.c.id == ids[1]))
        await asyncio.to_thread(upgrade, database_url)
        admin = KeyAdmin(KeyStore(db))
        created = await admin.create(KeySpec(name="new"))
        assert created["id"] > ids[1]
        old = await admin.get(ids[0])
        assert old["prefix"] == "sk-a"  # cut to what display prefixes show now
    finally:
        await db.close()


async def test_display_prefix_reveals_at_most_a_few_characters(database: Database) -> None:
    store = KeyStore(database)
    admin = KeyAdmin(store)
    chosen = "x" * 4 + "0123456789abcdefghijklmnopqrstuv"[:MIN_KEY_CHARS - 4]
    created = await admin.create(KeySpec(scope="admin"), key=chosen)
    assert created["prefix"] == chosen[:SHOWN_CHARS]
    generated = await admin.create(KeySpec())
    assert generated["prefix"] == generated["key"][:len(KEY_PREFIX) + SHOWN_CHARS]
    for row in await store.page(limit=1000):
        assert len(row["prefix"]) <= len(KEY_PREFIX) + SHOWN_CHARS
    with pytest.raises(Exception, match=f"at least {MIN_KEY_CHARS} characters"):
        await admin.create(KeySpec(), key=chosen[:-1])


async def test_the_last_admin_key_is_kept(database: Database) -> None:
    store = KeyStore(database)
    ring = KeyRing(store)
    await ring.start()
    admin = KeyAdmin(store, ring)
    try:
        only = await admin.create(KeySpec(name="only admin", scope="admin"))
        user = await admin.create(KeySpec(name="user"))
        for change in (KeyUpdate(enabled=False), KeyUpdate(scope="user"),
                       KeyUpdate(expires_at=time.time() - 1)):
            with pytest.raises(Conflict) as info:
                await admin.update(only["id"], change)
            assert info.value.code == "last_admin_key" and info.value.status == 409
        with pytest.raises(Conflict):
            await admin.delete(only["id"])
        with pytest.raises(Conflict):
            await admin.revoke(only["id"])
        row = await store.get(only["id"])
        assert row is not None and row["enabled"] and row["scope"] == "admin"
        assert row["expires_at"] is None
        assert ring.authenticate(only["key"]).is_admin
        # user keys come and go freely; with a second admin, the first may go
        await admin.disable(user["id"])
        await admin.delete(user["id"])
        second = await admin.create(KeySpec(name="second admin", scope="admin"))
        await admin.delete(only["id"])
        assert ring.authenticate(second["key"]).is_admin
    finally:
        await ring.close()


async def test_two_concurrent_deletions_leave_one_admin(database: Database) -> None:
    admin = KeyAdmin(KeyStore(database))
    survivor = await admin.create(KeySpec(scope="admin"))
    for _ in range(5):  # each round races the deletion of the only two admin keys
        other = await admin.create(KeySpec(scope="admin"))
        outcomes = await asyncio.gather(admin.delete(survivor["id"]), admin.delete(other["id"]),
                                        return_exceptions=True)
        refused = [o for o in outcomes if isinstance(o, Conflict)]
        assert len(refused) == 1 and outcomes.count(None) == 1, outcomes
        assert await KeyStore(database).count_admins() == 1
        survivor = survivor if isinstance(outcomes[0], Conflict) else other
        assert await KeyStore(database).get(survivor["id"]) is not None


async def test_first_concurrent_key_changes_on_a_new_database_all_land(
        database: Database) -> None:
    """The keys' version row is written by every key change; on a new database the first
    changes write it together. They queue on the row rather than racing to insert it (on
    MariaDB an update that finds no row and then an insert deadlock each other, and the
    deadlock rolls the whole change back: a 500 for a key deletion)."""
    admin = KeyAdmin(KeyStore(database))
    await admin.create(KeySpec(scope="admin"))
    made = [await admin.create(KeySpec(name=f"k{i}")) for i in range(4)]
    for round_ in range(15):
        async with database.engine.begin() as conn:  # a new database: no version row yet
            if database.dialect == "sqlite":
                await conn.execute(sa.delete(kv).where(kv.c.key == VERSION_KEY))
            else:  # no trace of the row either (a deleted row's record locks as a row)
                await conn.execute(sa.text("TRUNCATE TABLE kv"))
        outcomes = await asyncio.gather(
            *(admin.update(k["id"], KeyUpdate(name=f"k{i}-{round_}"))
              for i, k in enumerate(made)), return_exceptions=True)
        assert not [o for o in outcomes if isinstance(o, BaseException)], outcomes
        assert await KeyStore(database).version() is not None
    names = {k["name"] for k in (await admin.page())["data"]}
    assert {f"k{i}-14" for i in range(4)} <= names
