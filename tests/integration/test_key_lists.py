"""Key lists by cursor with search, and the feed of key changes, on SQLite, PostgreSQL and
MariaDB."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from inferd.auth.admin import KeyAdmin, KeySpec, KeyUpdate
from inferd.auth.keys import KeyRing, hash_key
from inferd.errors import AuthenticationFailed, Conflict
from inferd.store import keys as keys_store
from inferd.store.db import Database
from inferd.store.keys import KeyStore
from inferd.store.tables_control import api_key_changes, api_keys


async def _pages(admin: KeyAdmin, limit: int, **search: str) -> list[list[str]]:
    pages, after = [], None
    while True:
        page = await admin.page(after=after, limit=limit, **search)
        pages.append([k["name"] for k in page["data"]])
        if page["data"]:
            assert page["first_id"] == page["data"][0]["id"]
            assert page["last_id"] == page["data"][-1]["id"]
        if not page["has_more"]:
            return pages
        after = page["last_id"]


async def test_keys_page_by_cursor_and_search(database: Database) -> None:
    admin = KeyAdmin(KeyStore(database))
    specs = [
        ("alpha-1", "ann", "red"),
        ("alpha-2", "bob", "red"),
        ("beta", "ann", "blue"),
        ("Gamma 50%_off", None, None),
        ("delta", "carl", "RED team"),
    ]
    # chosen keys: display prefixes known in advance (sk-inferd-K000 ...)
    made = [
        await admin.create(
            KeySpec(name=n, owner=o, team=t), key=f"sk-inferd-K{i:03d}-0123456789abcdefghij"
        )
        for i, (n, o, t) in enumerate(specs)
    ]
    assert await _pages(admin, 2) == [["alpha-1", "alpha-2"], ["beta", "Gamma 50%_off"], ["delta"]]
    assert await _pages(admin, 5) == [["alpha-1", "alpha-2", "beta", "Gamma 50%_off", "delta"]]
    assert await _pages(admin, 1, owner="ann") == [["alpha-1"], ["beta"]]
    assert await _pages(admin, 10, team="red") == [["alpha-1", "alpha-2"]]
    assert await _pages(admin, 10, name="alpha") == [["alpha-1", "alpha-2"]]
    assert await _pages(admin, 10, name="lpha") == [[]]  # from the start only
    # the characters of LIKE patterns match only themselves
    assert await _pages(admin, 10, name="Gamma 50%") == [["Gamma 50%_off"]]
    assert await _pages(admin, 10, search="%") == [["Gamma 50%_off"]]
    assert await _pages(admin, 10, search="_") == [["Gamma 50%_off"]]
    # anywhere, in any case, in the name, owner, team or prefix
    assert await _pages(admin, 10, search="red") == [["alpha-1", "alpha-2", "delta"]]
    assert await _pages(admin, 10, search="ANN") == [["alpha-1", "beta"]]
    assert made[2]["prefix"] == "sk-inferd-K002"
    assert await _pages(admin, 10, prefix="sk-inferd-K002") == [["beta"]]
    assert await _pages(admin, 10, prefix="sk-inferd-K00") == [
        ["alpha-1", "alpha-2", "beta", "Gamma 50%_off", "delta"]
    ]
    assert await _pages(admin, 10, search="k004") == [["delta"]]
    page = await admin.page(after=made[-1]["id"])
    assert page == {
        "object": "list",
        "data": [],
        "first_id": None,
        "last_id": None,
        "has_more": False,
    }


async def _feed(database: Database) -> list[tuple[int, str]]:
    async with database.engine.connect() as conn:
        rows = await conn.execute(
            sa.select(api_key_changes.c.key_id, api_key_changes.c.key_hash).order_by(
                api_key_changes.c.id
            )
        )
        return [(int(r[0]), str(r[1])) for r in rows]


async def test_every_change_is_in_the_feed_in_order(database: Database) -> None:
    store = KeyStore(database)
    admin = KeyAdmin(store)
    first = await admin.create(KeySpec(scope="admin", name="first"))
    second = await admin.create(KeySpec(name="second"))
    await admin.update(second["id"], KeyUpdate(rpm=3))
    await admin.delete(second["id"])
    one, two = hash_key(first["key"]), hash_key(second["key"])
    assert await _feed(database) == [
        (first["id"], one),
        (second["id"], two),
        (second["id"], two),
        (second["id"], two),
    ]
    last = await store.last_change()
    assert [c[1:] for c in await store.changes_since(last - 2)] == [(second["id"], two)] * 2
    assert await store.changes_since(last) == []
    # a new secret for a key: its old hash is in the feed too, so it stops working everywhere
    await store.update(first["id"], {"key_hash": hash_key("sk-new-secret-0123456789abc")})
    assert (await _feed(database))[-2:] == [
        (first["id"], one),
        (first["id"], hash_key("sk-new-secret-0123456789abc")),
    ]


async def test_the_feed_is_pruned_by_the_writers(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(keys_store, "PRUNE_EVERY", 1)
    monkeypatch.setattr(keys_store, "CHANGE_RETENTION_SECONDS", 0.0)  # a change is soon old
    admin = KeyAdmin(KeyStore(database))
    made = [await admin.create(KeySpec(name=f"k{i}")) for i in range(3)]
    # each change prunes those made before it: the last one is left
    assert await _feed(database) == [(made[-1]["id"], hash_key(made[-1]["key"]))]


async def test_a_refused_change_is_not_in_the_feed(database: Database) -> None:
    admin = KeyAdmin(KeyStore(database))
    only = await admin.create(KeySpec(scope="admin", name="only"))
    before = await _feed(database)
    with pytest.raises(Conflict):
        await admin.disable(only["id"])
    assert await _feed(database) == before


async def test_a_second_ring_reads_only_the_changed_keys(database: Database) -> None:
    ring = KeyRing(KeyStore(database), refresh_seconds=3600)
    await ring.start()
    admin = KeyAdmin(KeyStore(database))
    try:
        await admin.create(KeySpec(scope="admin", name="admin"))
        used = await admin.create(KeySpec(name="used", rpm=1))
        for i in range(20):
            await admin.create(KeySpec(name=f"other{i}"))
        assert (await ring.authenticate_fresh(used["key"])).rpm == 1
        await admin.update(used["id"], KeyUpdate(rpm=2))
        assert await ring.refresh()
        assert ring.authenticate(used["key"]).rpm == 2
        assert ring.count == 1 and ring.has_admin
    finally:
        await ring.close()


async def test_a_change_committed_after_a_later_one_is_not_missed(database: Database) -> None:
    """Creations run side by side: the feed id one took may commit after a higher one, and a
    ring that read past it looks for it again."""
    if database.dialect == "sqlite":
        pytest.skip("SQLite runs one write transaction at a time")
    chosen = "sk-chosen-late-commit-0123456789"
    ring = KeyRing(KeyStore(database), refresh_seconds=3600)
    await ring.start()
    admin = KeyAdmin(KeyStore(database))
    try:
        with pytest.raises(AuthenticationFailed):  # remembered as unknown
            await ring.authenticate_fresh(chosen)
        async with database.engine.connect() as slow:
            transaction = await slow.begin()
            now = time.time()
            made = await slow.execute(
                sa.insert(api_keys).values(
                    name="late",
                    key_hash=hash_key(chosen),
                    prefix="sk-c",
                    scope="user",
                    enabled=True,
                    webhook_secret="",
                    created_at=now,
                    updated_at=now,
                )
            )
            key_id = made.inserted_primary_key[0]
            await slow.execute(
                sa.insert(api_key_changes).values(
                    key_id=key_id, key_hash=hash_key(chosen), changed_at=now
                )
            )
            await admin.create(KeySpec(name="quick"))  # a higher id, committed first
            assert await ring.refresh()
            await transaction.commit()
        assert await ring.refresh()  # the skipped id, looked for again
        assert (await ring.authenticate_fresh(chosen)).name == "late"
    finally:
        await ring.close()
