"""Usage time series with percentiles, on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import itertools

import sqlalchemy as sa

from inferd.store.db import Database
from inferd.store.tables_control import api_keys
from inferd.store.usage import UsageStore
from inferd.store.usage_series import UsageSeries, percentile
from inferd.usage import UsageRecord

T0 = 1_700_000_040.0  # on a minute boundary
_SERIAL = itertools.count()


def _record(key_id: str, model: str, at: float, latency: float, ttft: float | None,
            status: int = 200, images: int = 0) -> UsageRecord:
    return UsageRecord(at, "req", key_id, model, "local:x", "chat", ttft is not None, status,
                       None, 2, 3, 5, latency, ttft, images, images * 20)


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 50) is None
    assert percentile([5.0], 95) == 5.0
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0 and percentile(values, 95) == 95.0
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0


async def test_series_buckets_split_and_percentiles(database: Database) -> None:
    store = UsageStore(database)
    latencies = [float(v) for v in range(10, 210, 10)]  # 20 requests in the first minute
    records = [_record("1", "a", T0 + i, lat, lat / 2) for i, lat in enumerate(latencies)]
    records += [_record("2", "b", T0 + 125, 40.0, None, status=500, images=2),  # third minute
                _record("2", "a", T0 + 3600, 1.0, None)]  # outside the range asked
    await store.insert_many(records)
    series = UsageSeries(database)

    by_model = await series.series(bucket=60, since=T0, until=T0 + 240)
    assert list(by_model) == ["a", "b"]
    a, b = by_model["a"], by_model["b"]
    assert [x["bucket_start"] for x in a] == [T0, T0 + 60, T0 + 120, T0 + 180]
    assert [x["requests"] for x in a] == [20, 0, 0, 0]  # empty buckets are zeros
    assert a[0]["p50_latency_ms"] == 100.0 and a[0]["p95_latency_ms"] == 190.0
    assert a[0]["p50_ttft_ms"] == 50.0 and a[0]["total_tokens"] == 100
    assert a[1]["p50_latency_ms"] is None
    assert [x["errors"] for x in b] == [0, 0, 1, 0] and b[2]["p95_ttft_ms"] is None
    assert (b[2]["images"], b[2]["steps"], a[0]["images"]) == (2, 40, 0)

    by_key = await series.series(bucket=60, since=T0, until=T0 + 240, split_by="key",
                                 model="b")
    assert list(by_key) == ["key 2"]  # no such key: named by its id
    together = await series.series(bucket=3600, since=T0, until=T0 + 7200, split_by="none",
                                   key_id="2")
    # The range starts 14 minutes into an hour, so three hourly buckets touch it.
    assert [x["requests"] for x in together["all"]] == [1, 1, 0]


async def _key(database: Database, name: str) -> str:
    async with database.engine.begin() as conn:
        result = await conn.execute(sa.insert(api_keys).values(
            name=name, key_hash=f"hash-{name}-{next(_SERIAL)}", prefix="sk-x",
            scope="user", webhook_secret="", created_at=T0, updated_at=T0))
    return str(result.inserted_primary_key[0])


async def test_cancelled_apart_from_errors_and_keys_by_name(database: Database) -> None:
    alice, bob = await _key(database, "alice"), await _key(database, "bob")
    twin_one, twin_two = await _key(database, "twin"), await _key(database, "twin")
    await UsageStore(database).insert_many([
        _record(alice, "a", T0 + 1, 5.0, None),
        _record(alice, "a", T0 + 2, 5.0, None, status=499),  # broken off: cancelled
        _record(alice, "a", T0 + 3, 5.0, None, status=500),
        _record(bob, "a", T0 + 4, 5.0, None, status=429),
        _record(twin_one, "a", T0 + 5, 5.0, None),
        _record(twin_two, "a", T0 + 6, 5.0, None),
        _record("999999", "a", T0 + 7, 5.0, None),  # a key since deleted
    ])
    series = UsageSeries(database)
    by_key = await series.series(bucket=60, since=T0, until=T0 + 60, split_by="key")
    assert sorted(by_key) == sorted(["alice", "bob", f"twin (key {twin_one})",
                                     f"twin (key {twin_two})", "key 999999"])
    first = by_key["alice"][0]
    assert (first["requests"], first["errors"], first["cancelled"]) == (3, 1, 1)
    assert (by_key["bob"][0]["errors"], by_key["bob"][0]["cancelled"]) == (1, 0)
    together = await series.series(bucket=60, since=T0, until=T0 + 60, split_by="none")
    only = together["all"][0]
    assert (only["requests"], only["errors"], only["cancelled"]) == (7, 2, 1)
