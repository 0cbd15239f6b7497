"""Prices in the store and the cost of usage records, on SQLite, PostgreSQL and MariaDB: a
model's price through the store, the config file and the catalogue (with a replica's
override), and costs summed by ``/admin/v1/usage``'s aggregate."""

from __future__ import annotations

import time
from decimal import Decimal

import sqlalchemy as sa

from inferd.outbound import HostAllowList
from inferd.prices import Price, PriceBook
from inferd.routing.catalog import ReplicaCatalog
from inferd.routing.router import Router
from inferd.schemas.answers import Usage
from inferd.settings import RemoteModelSpec
from inferd.store.db import Database
from inferd.store.replicas import ReplicaStore
from inferd.store.tables_control import usage_records
from inferd.store.usage import UsageStore
from inferd.usage import UsageRecord

PRICE = {"input": 0.15, "output": 0.6, "cached_input": 0.075, "image": 0.04}


async def test_a_models_price_is_stored_changed_and_removed(database: Database) -> None:
    store = ReplicaStore(database)
    model = await store.create_model("priced", [], [], price=PRICE)
    assert (await store.get_model(model.id)).price == PRICE  # type: ignore[union-attr]
    assert (await store.create_model("free", [], [])).price is None
    changed = await store.update_model(model.id, price={**PRICE, "output": 1.25})
    assert changed is not None and changed.price == {**PRICE, "output": 1.25}
    kept = await store.update_model(model.id, aliases=["p"])
    assert kept is not None and kept.price == {**PRICE, "output": 1.25}
    removed = await store.update_model(model.id, price={})
    assert removed is not None and removed.price is None


async def test_config_prices_and_replica_overrides_reach_the_price_book(database: Database) -> None:
    store = ReplicaStore(database)
    spec = RemoteModelSpec.model_validate(
        {
            "name": "remote",
            "aliases": ["rem"],
            "price": {"input": "2", "output": "4"},
            "replicas": [
                {"url": "http://127.0.0.1:1/v1"},
                {"url": "http://127.0.0.1:2/v1", "options": {"price": {"input": 20}}},
            ],
        }
    )
    await store.apply_config([spec])
    record = await store.find_model("remote")
    assert record is not None and record.price == {
        "input": 2.0,
        "output": 4.0,
        "cached_input": None,
        "image": 0.0,
        "step": 0.0,
    }
    plain, special = sorted(await store.list_replicas(record.id), key=lambda r: r.url)

    book = PriceBook()
    catalog = ReplicaCatalog(
        Router(),
        store,
        HostAllowList(["127.0.0.0/8"]),
        interval=3600,
        cooldown_base=1.0,
        cooldown_max=60.0,
        prices=book,
    )
    try:
        await catalog.sync()
        usage = Usage.of(1_000_000, 1_000_000)
        assert book.cost("remote", str(plain.id), usage) == 6.0
        assert book.cost("rem", None, usage) == 6.0
        assert book.cost("remote", str(special.id), usage) == 20.0  # output: 0 there
        # a change through the store shows at the next sync
        await store.update_model(record.id, price={"input": 1})
        await catalog.sync()
        assert book.cost("remote", str(plain.id), usage) == 1.0
    finally:
        await catalog.close()


async def test_costs_are_stored_and_summed_per_key_and_model(database: Database) -> None:
    usage = UsageStore(database)
    now = time.time()
    price = Price(input=Decimal("0.15"), output=Decimal("0.6"), cached_input=Decimal("0.075"))

    def record(key: str, model: str, prompt: int, completion: int, cached: int) -> UsageRecord:
        return UsageRecord(
            now,
            None,
            key,
            model,
            None,
            "chat",
            False,
            200,
            None,
            prompt,
            completion,
            prompt + completion,
            1.0,
            None,
            None,
            None,
            None,
            price.cost(prompt, completion, cached),
        )

    records = [
        record("k1", "a", 1000, 100, 0),
        record("k1", "a", 2000, 300, 1500),
        record("k2", "a", 10, 5, 0),
        record("k2", "b", 400, 40, 100),
    ]
    await usage.insert_many(records)
    rows = await usage.aggregate(group_by=["key", "model"])
    sums = {(r["key_id"], r["model"]): r["cost"] for r in rows}
    assert sums[("k1", "a")] == records[0].cost + records[1].cost
    assert sums[("k2", "a")] == records[2].cost
    assert sums[("k2", "b")] == records[3].cost
    assert records[1].cost == float(
        (500 * Decimal("0.15") + 1500 * Decimal("0.075") + 300 * Decimal("0.6")) / 10**6
    )
    total = (await usage.aggregate(group_by=[]))[0]["cost"]
    assert abs(total - sum(r.cost for r in records)) < 1e-15
    newest = await usage.recent(limit=1)
    assert newest[0]["cost"] == records[-1].cost


async def test_records_without_a_cost_cost_nothing(database: Database) -> None:
    """A row written without the column (as every record before prices) reads back as 0."""
    async with database.engine.begin() as conn:
        await conn.execute(
            sa.insert(usage_records).values(
                created_at=time.time(),
                model="old",
                endpoint="chat",
                stream=False,
                status=200,
                prompt_tokens=5,
                completion_tokens=5,
                total_tokens=10,
                latency_ms=1.0,
            )
        )
    rows = await UsageStore(database).aggregate(group_by=["model"])
    assert rows[0]["model"] == "old" and rows[0]["cost"] == 0
