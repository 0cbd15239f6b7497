"""How long the Monitoring charts' query takes as usage grows, next to the SQL aggregate.

    PYTHONPATH=src python bench/usage_series.py [RECORDS] [DATABASE_URL]

Writes RECORDS usage records (default 200,000) spread over a week into a fresh SQLite file
(or the database URL given), then times, in one run, the series with percentiles
(``UsageSeries.series``: rows read, buckets summed in Python) and the SQL ``GROUP BY`` of
``UsageStore.aggregate`` (no percentiles) over the last hour, day and week; median of 5 each.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from inferd.store.db import Database
from inferd.store.usage import UsageStore
from inferd.store.usage_series import UsageSeries

WEEK = 7 * 86400
RANGES = {"hour": (3600, 60, "minute"), "day": (86400, 300, "hour"), "week": (WEEK, 3600, "hour")}


async def median_ms(run: Callable[[], Awaitable[Any]], times: int = 5) -> float:
    samples = []
    for _ in range(times):
        start = time.perf_counter()
        await run()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


async def main(records: int, url: str) -> None:
    db = Database(url)
    await db.migrate()
    store, series = UsageStore(db), UsageSeries(db)
    now = time.time()
    rng = random.Random(7)
    for start in range(0, records, 10_000):
        await store.insert_many([
            (now - rng.random() * WEEK, "req", str(rng.randint(1, 20)), f"m{rng.randint(1, 4)}",
             "local:x", "chat", True, 200, None, 30, 20, 50, rng.random() * 900,
             rng.random() * 90, 0, 0) for _ in range(start, min(records, start + 10_000))])
    print(f"{records:,} records over a week ({url.split(':')[0]})")
    print(f"{'range':<6} {'rows':>8} {'series+p95 ms':>14} {'SQL GROUP BY ms':>16} {'ratio':>6}")
    for name, (span, bucket, sql_bucket) in RANGES.items():
        since = now - span
        rows = sum(b["requests"] for s in (await series.series(
            bucket=bucket, since=since, until=now)).values() for b in s)
        with_p = await median_ms(lambda b=bucket, s=since: series.series(
            bucket=b, since=s, until=now))
        plain = await median_ms(lambda b=sql_bucket, s=since: store.aggregate(
            group_by=["model", "time"], bucket=b, since=s, until=now))
        print(f"{name:<6} {rows:>8,} {with_p:>14.1f} {plain:>16.1f} {with_p / plain:>6.1f}")
    await db.close()


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    with tempfile.TemporaryDirectory() as tmp:
        target = sys.argv[2] if len(sys.argv) > 2 else f"sqlite+aiosqlite:///{Path(tmp)}/b.db"
        asyncio.run(main(count, target))
