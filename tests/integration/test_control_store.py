"""Keys, usage records and the /tables browser on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from inferd.auth.admin import KeyAdmin, KeySpec, KeyUpdate
from inferd.auth.keys import KeyRing, hash_key
from inferd.errors import AuthenticationFailed, NotFound
from inferd.store.db import Database
from inferd.store.keys import KeyStore
from inferd.store.monitor import REDACTED, TableBrowser
from inferd.store.usage import UsageSink, UsageStore
from inferd.usage import UsageRecord, UsageRecorder
from tests.helpers import wait_for_async


def _record(key_id: str | None, model: str, at: float, status: int = 200,
            tokens: tuple[int, int] = (3, 5)) -> UsageRecord:
    return UsageRecord(at, "req", key_id, model, "local:x", "chat", False, status, None,
                       tokens[0], tokens[1], sum(tokens), 12.5, None, None, None)


async def test_keys_hashed_cached_and_revoked_through_the_ring(database: Database) -> None:
    store = KeyStore(database)
    ring = KeyRing(store)
    await ring.start()
    admin = KeyAdmin(store, ring)
    try:
        created = await admin.create(KeySpec(name="k", owner="ann", models=["m"], rpm=5))
        secret = created["key"]
        row = await store.get(created["id"])
        assert row is not None and row["key_hash"] == hash_key(secret)
        assert secret not in str(row)
        principal = ring.authenticate(secret)
        assert principal.key_id == str(created["id"]) and principal.rpm == 5
        assert principal.allowed_models == frozenset({"m"})
        assert principal.metadata["owner"] == "ann"
        with pytest.raises(AuthenticationFailed):
            ring.authenticate(secret + "x")
        await admin.update(created["id"], KeyUpdate(rpm=7))
        assert ring.authenticate(secret).rpm == 7
        await admin.disable(created["id"])
        with pytest.raises(AuthenticationFailed, match="disabled"):
            ring.authenticate(secret)
        await admin.delete(created["id"])
        with pytest.raises(AuthenticationFailed):
            ring.authenticate(secret)
        with pytest.raises(NotFound):
            await admin.get(created["id"])
    finally:
        await ring.close()


async def test_a_second_ring_sees_changes_made_elsewhere(database: Database) -> None:
    """Two gateways: a key revoked through one stops working on the other after a refresh."""
    other = KeyRing(KeyStore(database), refresh_seconds=0.1)
    await other.start()
    admin = KeyAdmin(KeyStore(database))  # no ring: like the CLI
    try:
        await admin.create(KeySpec(scope="admin", name="stays"))  # the last admin key stays
        created = await admin.create(KeySpec(scope="admin"))
        # an unknown key triggers a (rate-limited) check for new keys
        assert (await other.authenticate_fresh(created["key"])).is_admin
        await admin.disable(created["id"])

        async def refused() -> bool:
            try:
                other.authenticate(created["key"])
            except AuthenticationFailed:
                return True
            return False

        await wait_for_async(refused, within=30, what="the disabled key reaching the ring")
        with pytest.raises(AuthenticationFailed):
            other.authenticate(created["key"])
    finally:
        await other.close()


async def test_a_key_made_elsewhere_right_after_a_miss_is_found(database: Database) -> None:
    """A miss just before a key is created elsewhere does not make that key's first use fail."""
    ring = KeyRing(KeyStore(database), refresh_seconds=3600)
    await ring.start()
    admin = KeyAdmin(KeyStore(database))  # no ring: like the CLI
    try:
        with pytest.raises(AuthenticationFailed):
            await ring.authenticate_fresh("sk-inferd-not-a-key-of-this-server")
        created = await admin.create(KeySpec(scope="user"))
        principal = await ring.authenticate_fresh(created["key"])
        assert principal.key_id == str(created["id"])
    finally:
        await ring.close()


async def test_usage_batches_and_aggregates(database: Database, tmp_path: Path) -> None:
    store = UsageStore(database)
    recorder = UsageRecorder(lambda: UsageSink.open(database.url), directory=tmp_path,
                             flush_seconds=3600, batch_size=200)
    await recorder.start()
    now = time.time()
    recorder.record_many([_record(str(i % 3), "a" if i % 2 else "b", now,
                                  status=429 if i == 0 else 200) for i in range(450)])
    await recorder.close()  # writes everything left
    assert recorder.written == 450 and recorder.flushes == 3
    assert await store.count() == 450
    rows = await store.aggregate(group_by=["key"])
    assert {r["key_id"]: r["requests"] for r in rows} == {"0": 150, "1": 150, "2": 150}
    assert sum(r["errors"] for r in rows) == 1
    assert sum(r["total_tokens"] for r in rows) == 450 * 8
    timed = await store.aggregate(group_by=["model", "time"], bucket="minute")
    assert {r["model"] for r in timed} == {"a", "b"}
    assert all(r["bucket_start"] <= now < r["bucket_start"] + 60 for r in timed)
    assert (await store.tokens_since({"1": now - 1, "2": now + 1})) == {"1": 150 * 8, "2": 0}


async def test_tables_lists_allowed_tables_and_redacts_secrets(database: Database) -> None:
    admin = KeyAdmin(KeyStore(database))
    created = await admin.create(KeySpec(owner="bob", metadata={"api_key": "x", "team": "t"}))
    browser = TableBrowser(database)
    assert "api_keys" in browser.tables() and "metrics" in browser.tables()
    assert "kv" not in browser.tables() and await browser.rows("kv") is None
    rows = await browser.rows("api_keys")
    assert rows is not None and rows[0]["id"] == created["id"]
    assert rows[0]["key_hash"] == REDACTED and rows[0]["webhook_secret"] == REDACTED
    assert rows[0]["extra"] == {"api_key": REDACTED, "team": "t"}
    assert created["key"] not in str(rows) and created["webhook_secret"] not in str(rows)
    assert rows[0]["owner"] == "bob" and rows[0]["prefix"] == created["prefix"]
