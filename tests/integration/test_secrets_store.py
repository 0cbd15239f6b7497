"""Secrets encrypted at rest on SQLite, PostgreSQL and MariaDB: replica credentials, the keys'
webhook secrets and the installation's webhook secret are stored encrypted, read back in
plaintext, and re-encrypted with a new key by ``rotate``."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa

from inferd.ids import new_webhook_secret
from inferd.secretbox import PREFIX, SecretBox, SecretKeyError, new_key
from inferd.settings import ReplicaSpec
from inferd.store import secrets
from inferd.store.db import Database
from inferd.store.keys import KeyStore
from inferd.store.replicas import ReplicaStore
from inferd.store.repo import WEBHOOK_SECRET, KeyValueStore
from inferd.store.tables import kv
from inferd.store.tables_control import api_keys
from inferd.store.tables_replicas import replica_security_rules, replicas

UPSTREAM = "sk-upstream-credential-7c21"


async def _raw(db: Database) -> list[str]:
    """Every stored secret column as the database holds it."""
    queries = [sa.select(replica_security_rules.c.secret), sa.select(api_keys.c.webhook_secret),
               sa.select(kv.c.value).where(kv.c.key == WEBHOOK_SECRET)]
    async with db.engine.connect() as conn:
        return [str(v) for query in queries for v in (await conn.execute(query)).scalars()]


@pytest.fixture
async def reopen(database: Database) -> AsyncIterator[list[Database]]:
    """Other handles on the same database (with other keys); closed at the end."""
    handles: list[Database] = []
    yield handles
    for handle in handles:
        await handle.close()


async def test_secrets_are_encrypted_at_rest_and_rotated(database: Database,
                                                         reopen: list[Database]) -> None:
    old, new = new_key(), new_key()

    def handle(*keys: str) -> Database:
        db = Database(database.url, secrets=SecretBox(list(keys)))
        reopen.append(db)
        return db

    db = handle(old)
    replicas = ReplicaStore(db)
    model = await replicas.create_model("m", [], [])
    replica = await replicas.create_replica(model.id, ReplicaSpec(url="http://10.0.0.5:8000",
                                                                  api_key=UPSTREAM))
    hook_secret = new_webhook_secret()
    key = await KeyStore(db).create({"key_hash": "0" * 64, "prefix": "sk-xx", "scope": "user",
                                     "webhook_secret": hook_secret, "enabled": True})
    assert key["webhook_secret"] == hook_secret
    installation = await KeyValueStore(db).setdefault_secret(WEBHOOK_SECRET, "whsec_install")
    assert installation == "whsec_install"

    raw = await _raw(db)
    assert len(raw) == 3 and all(v.startswith(PREFIX) for v in raw)
    for secret in (UPSTREAM, hook_secret, "whsec_install"):
        assert all(secret not in v for v in raw)
    _, records = await replicas.catalogue()
    assert [r.api_key for r in records] == [UPSTREAM]
    assert (await KeyStore(db).get(key["id"]))["webhook_secret"] == hook_secret  # type: ignore[index]

    # no key, or only another key: refused, never a wrong credential
    for keys in ((), (new,)):
        with pytest.raises(SecretKeyError):
            await ReplicaStore(handle(*keys)).catalogue()
        with pytest.raises(SecretKeyError):
            await KeyStore(handle(*keys)).page()

    assert await secrets.rotate(handle(new, old)) == 3
    after = handle(new)
    assert all(v.startswith(PREFIX) for v in await _raw(after)) and await _raw(after) != raw
    _, records = await ReplicaStore(after).catalogue()
    assert records[0].id == replica.id and records[0].api_key == UPSTREAM
    assert (await KeyStore(after).page())[0]["webhook_secret"] == hook_secret
    assert await KeyValueStore(after).setdefault_secret(WEBHOOK_SECRET, "x") == "whsec_install"
    with pytest.raises(SecretKeyError):
        await ReplicaStore(handle(old)).catalogue()


async def test_a_replica_url_with_a_token_is_stored_masked(database: Database) -> None:
    store = ReplicaStore(Database(database.url, secrets=SecretBox([new_key()])))
    url = "http://10.0.0.5:8000/v1?api-version=2024&token=url-token-61ac"
    model = await store.create_model("m", [], [])
    replica = await store.create_replica(model.id, ReplicaSpec(url=url))
    assert replica.url == "http://10.0.0.5:8000/v1?api-version=***&token=***"
    assert not replica.has_credential  # the URL is not an api_key
    async with database.engine.connect() as conn:
        stored = (await conn.execute(sa.select(replicas.c.url))).scalars().all()
    assert stored == [replica.url]
    assert all("url-token-61ac" not in v for v in await _raw(store.db))
    _, records = await store.catalogue()
    assert records[0].url == url
    await store.update_replica(replica.id, {"url": "http://10.0.0.6:8000/v1"})
    _, records = await store.catalogue()
    assert records[0].url == "http://10.0.0.6:8000/v1" and await _raw(store.db) == []
    await store.db.close()


async def test_plaintext_rows_of_before_are_read_and_encrypted_by_rotate(
        database: Database, reopen: list[Database]) -> None:
    store = ReplicaStore(database)  # no key: plaintext
    model = await store.create_model("m", [], [])
    await store.create_replica(model.id, ReplicaSpec(url="http://10.0.0.5:8000",
                                                     api_key=UPSTREAM))
    assert await _raw(database) == [UPSTREAM]
    key = new_key()
    db = Database(database.url, secrets=SecretBox([key]))
    reopen.append(db)
    _, records = await ReplicaStore(db).catalogue()
    assert records[0].api_key == UPSTREAM
    assert await secrets.rotate(db) == 1
    raw = await _raw(db)
    assert raw[0].startswith(PREFIX) and UPSTREAM not in raw[0]
    _, records = await ReplicaStore(db).catalogue()
    assert records[0].api_key == UPSTREAM
