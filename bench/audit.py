"""What the audit log costs: key changes with and without it, refused keys counted, reading.

    PYTHONPATH=src python bench/audit.py [CHANGES] [DATABASE_URL]

On a fresh SQLite file (or the database URL given, which it migrates and writes to):
CHANGES key creations and as many updates through ``KeyAdmin`` (the admin API's service,
without the key ring's reload) without and with the audit log, side by side (median of 3
rounds each, alternating); the cost of counting a refused key (``AuditLog.refused``, the
flood path: memory only); and a page of the audit log (newest 100 with a filter) over the
events written plus 100,000 more.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from inferd.audit import AuditLog, AuditQuery
from inferd.auth.admin import KeyAdmin, KeySpec, KeyUpdate
from inferd.store.audit import AuditStore
from inferd.store.db import Database
from inferd.store.keys import KeyStore


async def changes(admin: KeyAdmin, count: int, tag: str) -> float:
    """Seconds for ``count`` creations and ``count`` updates, one after another."""
    started = time.perf_counter()
    for i in range(count):
        created = await admin.create(KeySpec(name=f"{tag}-{i}", owner="bench", rpm=10))
        await admin.update(created["id"], KeyUpdate(rpm=20))
    return time.perf_counter() - started


async def main(count: int, url: str) -> None:
    db = Database(url)
    await db.migrate()
    store = KeyStore(db)
    log = AuditLog(AuditStore(db))
    plain, audited = KeyAdmin(store), KeyAdmin(store, audit=log)
    runs: dict[str, list[float]] = {"without": [], "with": []}
    for round_ in range(3):
        runs["without"].append(await changes(plain, count, f"p{round_}"))
        runs["with"].append(await changes(audited, count, f"a{round_}"))
    ops = 2 * count
    print(f"{db.dialect}: {ops} key changes ({count} creations + {count} updates) per round")
    for name, seconds in runs.items():
        median = statistics.median(seconds)
        print(
            f"  {name:>7} the audit log: {median * 1000 / ops:6.2f} ms a change, "
            f"{ops / median:7.0f} changes/s"
        )
    ratio = statistics.median(runs["with"]) / statistics.median(runs["without"])
    print(f"  ratio with/without: {ratio:.2f}")

    flood = 100_000
    started = time.perf_counter()
    for i in range(flood):
        log.refused("auth.failed", f"203.0.113.{i % 200}", "invalid_api_key")
    per = (time.perf_counter() - started) / flood
    started = time.perf_counter()
    await log.tick()
    written = time.perf_counter() - started
    print(
        f"refused keys: {per * 1e9:.0f} ns each counted in memory; {flood} refusals from "
        f"200 addresses written as 200 events in {written * 1000:.0f} ms"
    )

    extra = 100_000
    now = time.time()
    batch = [
        {
            "created_at": now - i,
            "actor_name": "",
            "via": "api",
            "actor_key_id": str(i % 50),
            "action": ("key.update", "model.update", "replica.update")[i % 3],
            "object_type": "api_key",
            "object_id": str(i % 1000),
        }
        for i in range(extra)
    ]
    for start in range(0, extra, 5000):
        await AuditStore(db).append(batch[start : start + 5000])
    total = await log.store.count()
    for name, query in (
        ("newest 100", AuditQuery()),
        ("action=model.update", AuditQuery(action="model.update")),
        ("actor=7", AuditQuery(actor="7")),
        ("object api_key/42", AuditQuery(object_type="api_key", object_id="42")),
    ):
        times = []
        for _ in range(5):
            started = time.perf_counter()
            await log.page(query, limit=100)
            times.append(time.perf_counter() - started)
        print(f"page of {total} events, {name}: {statistics.median(times) * 1000:.1f} ms")
    await db.close()


if __name__ == "__main__":
    changes_count = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    if len(sys.argv) > 2:
        asyncio.run(main(changes_count, sys.argv[2]))
    else:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "bench.db"
            asyncio.run(main(changes_count, f"sqlite+aiosqlite:///{path}"))
