"""``KeyRing``: a bounded cache by hash in front of the key store (a real SQLite file), unknown
keys remembered (bounded too), reads shared and limited, and the change feed applied
incrementally."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from inferd.auth import keys as keys_module
from inferd.auth.admin import KeyAdmin, KeySpec, KeyUpdate
from inferd.auth.keys import KeyRing, hash_key
from inferd.errors import AuthenticationFailed
from inferd.store.db import Database
from inferd.store.keys import KeyStore
from tests.helpers import wait_for_async


class CountingStore(KeyStore):
    """The key store, counting its reads; ``gate`` (when set) holds the answers of reads by
    hash."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.by_hash_calls: list[list[str]] = []
        self.by_id_calls: list[list[int]] = []
        self.feed_reads = 0
        self.gate: asyncio.Event | None = None
        self.reading = 0
        self.most_reading = 0

    async def by_hash(self, key_hashes: list[str]) -> list[dict[str, Any]]:
        self.by_hash_calls.append(key_hashes)
        self.reading += 1
        self.most_reading = max(self.most_reading, self.reading)
        try:
            rows = await super().by_hash(key_hashes)
            if self.gate is not None:  # what was read may be out of date when it returns
                await self.gate.wait()
            return rows
        finally:
            self.reading -= 1

    async def by_id(self, key_ids: list[int]) -> list[dict[str, Any]]:
        self.by_id_calls.append(key_ids)
        return await super().by_id(key_ids)

    async def changes_since(
        self, change_id: int, limit: int = 10_000
    ) -> list[tuple[int, int, str]]:
        self.feed_reads += 1
        return await super().changes_since(change_id, limit)


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'keys.db'}")
    await database.migrate()
    yield database
    await database.close()


async def _ring(db: Database, **options: Any) -> tuple[KeyRing, CountingStore]:
    store = CountingStore(db)
    ring = KeyRing(store, refresh_seconds=3600, **options)
    await ring.start()
    return ring, store


async def test_the_cache_is_bounded_and_drops_the_least_recently_used(db: Database) -> None:
    elsewhere = KeyAdmin(KeyStore(db))  # no ring: like the CLI or another gateway
    made = [(await elsewhere.create(KeySpec(name=f"k{i}")))["key"] for i in range(5)]
    ring, store = await _ring(db, cache_size=3)
    try:
        for key in made[:3]:
            await ring.authenticate_fresh(key)
        await ring.authenticate_fresh(made[0])  # used again: now the most recent
        await ring.authenticate_fresh(made[3])  # drops made[1], the least recently used
        assert ring.count == 3
        assert {p.name for p in ring.principals()} == {"k0", "k2", "k3"}
        reads = len(store.by_hash_calls)
        assert (await ring.authenticate_fresh(made[0])).name == "k0"
        assert len(store.by_hash_calls) == reads  # cached: no read
        assert (await ring.authenticate_fresh(made[1])).name == "k1"
        assert store.by_hash_calls[-1] == [hash_key(made[1])]  # dropped: read again
        assert ring.count == 3
    finally:
        await ring.close()


async def test_unknown_keys_are_remembered_in_a_bounded_cache(db: Database) -> None:
    ring, store = await _ring(db, miss_cache_size=2)
    try:
        for _ in range(3):
            with pytest.raises(AuthenticationFailed, match="Incorrect API key"):
                await ring.authenticate_fresh("sk-inferd-unknown-0")
        assert len(store.by_hash_calls) == 1  # remembered after the first read
        for i in range(1, 6):
            with pytest.raises(AuthenticationFailed):
                await ring.authenticate_fresh(f"sk-inferd-unknown-{i}")
        assert ring.unknown_count == 2
        assert len(store.by_hash_calls) == 6
        with pytest.raises(AuthenticationFailed):  # pushed out by newer ones: read again
            await ring.authenticate_fresh("sk-inferd-unknown-0")
        assert len(store.by_hash_calls) == 7
    finally:
        await ring.close()


async def test_unknown_keys_are_forgotten_after_their_time(db: Database) -> None:
    ring, store = await _ring(db, miss_ttl=0.0)
    try:
        for _ in range(2):
            with pytest.raises(AuthenticationFailed):
                await ring.authenticate_fresh("sk-inferd-unknown")
        assert len(store.by_hash_calls) == 2
    finally:
        await ring.close()


async def test_requests_with_the_same_key_share_one_read(db: Database) -> None:
    created = await KeyAdmin(KeyStore(db)).create(KeySpec(name="shared"))
    ring, store = await _ring(db)
    store.gate = asyncio.Event()
    try:
        waiting = [
            asyncio.ensure_future(ring.authenticate_fresh(created["key"])) for _ in range(20)
        ]
        bad = [asyncio.ensure_future(ring.authenticate_fresh("sk-inferd-nope")) for _ in range(20)]

        async def both_reading() -> bool:
            return store.reading == 2

        await wait_for_async(both_reading, what="the two reads")
        store.gate.set()
        assert {p.name for p in await asyncio.gather(*waiting)} == {"shared"}
        refused = await asyncio.gather(*bad, return_exceptions=True)
        assert all(isinstance(r, AuthenticationFailed) for r in refused)
        assert len(store.by_hash_calls) == 2
    finally:
        await ring.close()


async def test_at_most_max_lookups_reads_run_at_once(db: Database) -> None:
    ring, store = await _ring(db, max_lookups=2)
    store.gate = asyncio.Event()
    try:
        flood = [
            asyncio.ensure_future(ring.authenticate_fresh(f"sk-inferd-random-{i}"))
            for i in range(10)
        ]

        async def two_reading() -> bool:
            return store.reading == 2

        await wait_for_async(two_reading, what="two reads at once")
        for _ in range(20):  # the others wait for a slot, whatever the loop does meanwhile
            await asyncio.sleep(0)
        assert store.reading == 2 and len(store.by_hash_calls) == 2
        store.gate.set()
        refused = await asyncio.gather(*flood, return_exceptions=True)
        assert all(isinstance(r, AuthenticationFailed) for r in refused)
        assert store.most_reading == 2 and len(store.by_hash_calls) == 10
    finally:
        await ring.close()


async def test_the_refresh_applies_only_the_changes_since_the_last_one(db: Database) -> None:
    elsewhere = KeyAdmin(KeyStore(db))
    await elsewhere.create(KeySpec(scope="admin", name="admin"))
    held = await elsewhere.create(KeySpec(name="held", rpm=5))
    other = await elsewhere.create(KeySpec(name="not held"))
    ring, store = await _ring(db)
    try:
        assert (await ring.authenticate_fresh(held["key"])).rpm == 5
        assert not await ring.refresh()  # nothing changed since the start
        await elsewhere.update(held["id"], KeyUpdate(rpm=9))
        await elsewhere.disable(other["id"])
        assert await ring.refresh()
        # the held key is read again by id (not every key); the other one is not loaded
        assert store.by_id_calls == [[held["id"]]]
        assert ring.authenticate(held["key"]).rpm == 9
        assert ring.count == 1
        await elsewhere.disable(held["id"])
        await ring.refresh()
        with pytest.raises(AuthenticationFailed, match="disabled"):
            ring.authenticate(held["key"])
        await elsewhere.delete(held["id"])
        await ring.refresh()
        assert ring.count == 0
        with pytest.raises(AuthenticationFailed, match="Incorrect API key"):
            await ring.authenticate_fresh(held["key"])
    finally:
        await ring.close()


async def test_a_key_remembered_as_unknown_works_once_created(db: Database) -> None:
    """An admin-chosen key presented before it exists, then created elsewhere."""
    chosen = "sk-chosen-key-0123456789abcdef"
    ring, _ = await _ring(db)
    try:
        with pytest.raises(AuthenticationFailed):
            await ring.authenticate_fresh(chosen)
        assert ring.unknown_count == 1
        created = await KeyAdmin(KeyStore(db)).create(KeySpec(name="chosen"), key=chosen)
        await ring.refresh()
        assert ring.unknown_count == 0
        assert (await ring.authenticate_fresh(chosen)).key_id == str(created["id"])
    finally:
        await ring.close()


async def test_a_change_in_this_process_loads_the_changed_key(db: Database) -> None:
    ring, store = await _ring(db)
    admin = KeyAdmin(store, ring)
    announced: list[str] = []

    async def announce(key_id: str) -> None:
        announced.append(key_id)

    ring.announce = announce
    try:
        created = await admin.create(KeySpec(name="mine", tpm=10))
        assert ring.authenticate(created["key"]).tpm == 10  # loaded without a read by hash
        await admin.update(created["id"], KeyUpdate(tpm=20))
        assert ring.authenticate(created["key"]).tpm == 20
        assert store.by_hash_calls == [] and store.feed_reads == 0
        await ring.refresh()  # its own changes in the feed: already applied, skipped
        assert store.feed_reads > 0 and store.by_id_calls == []
        assert ring.authenticate(created["key"]).tpm == 20
        await admin.delete(created["id"])
        with pytest.raises(AuthenticationFailed):
            ring.authenticate(created["key"])
        assert announced == [str(created["id"])] * 3
    finally:
        await ring.close()


async def test_a_read_that_raced_with_a_change_is_not_kept(db: Database) -> None:
    elsewhere = KeyAdmin(KeyStore(db))
    await elsewhere.create(KeySpec(scope="admin", name="admin"))
    created = await elsewhere.create(KeySpec(name="racing"))
    ring, store = await _ring(db)
    store.gate = asyncio.Event()
    try:
        first = asyncio.ensure_future(ring.authenticate_fresh(created["key"]))

        async def reading() -> bool:
            return store.reading == 1

        await wait_for_async(reading, what="the read")
        await elsewhere.disable(created["id"])
        await ring.apply_announcement(str(created["id"]))  # the change arrives meanwhile
        await ring.refresh()
        store.gate.set()
        # the request raced with the change: it got what it read, which is not kept
        assert (await first).name == "racing"
        with pytest.raises(AuthenticationFailed, match="disabled"):
            await ring.authenticate_fresh(created["key"])
    finally:
        await ring.close()


async def test_owners_are_read_by_id(db: Database) -> None:
    elsewhere = KeyAdmin(KeyStore(db))
    await elsewhere.create(KeySpec(scope="admin", name="admin"))
    created = await elsewhere.create(KeySpec(name="owner"))
    ring, store = await _ring(db)
    try:
        assert (await ring.owner_fresh(str(created["id"]))).name == "owner"
        assert store.by_id_calls == [[created["id"]]]
        assert ring.owner(str(created["id"])).name == "owner"  # now cached
        for unknown in ("999999", "not-an-id", "1" * 40):
            with pytest.raises(AuthenticationFailed, match="no longer valid"):
                await ring.owner_fresh(unknown)
        await elsewhere.disable(created["id"])
        await ring.refresh()
        with pytest.raises(AuthenticationFailed, match="no longer valid"):
            await ring.owner_fresh(str(created["id"]))
    finally:
        await ring.close()


async def test_a_ring_that_missed_the_feed_too_long_starts_over(db: Database) -> None:
    created = await KeyAdmin(KeyStore(db)).create(KeySpec(name="k"))
    ring, _ = await _ring(db)
    try:
        await ring.authenticate_fresh(created["key"])
        assert ring.count == 1
        ring._polled_at = time.monotonic() - keys_module.STALE_SECONDS - 1
        assert await ring.refresh()
        assert ring.count == 0
        assert (await ring.authenticate_fresh(created["key"])).name == "k"
    finally:
        await ring.close()


async def test_has_admin_follows_the_first_admin_key(db: Database) -> None:
    ring, _ = await _ring(db)
    try:
        assert not ring.has_admin
        await KeyAdmin(KeyStore(db)).create(KeySpec(scope="admin", name="first"))
        await ring.apply_announcement("1")
        assert ring.has_admin
    finally:
        await ring.close()
