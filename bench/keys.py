"""The key ring at a million keys, on PostgreSQL and on SQLite.

    .venv/bin/python bench/keys.py                       # both stores, 1,000,000 keys
    .venv/bin/python bench/keys.py --stores sqlite --keys 100000

Per store: the script bulk-loads ``--keys`` keys by direct SQL (COPY on PostgreSQL, one
``executemany`` on SQLite), starts a gateway (``inferd gateway`` on PostgreSQL, ``inferd serve``
on SQLite) and measures

* its start and resident memory with that many keys in the database;
* key creation through the admin API (``POST /admin/v1/keys``, 16 at a time);
* authentication of random existing keys, twice each (cold: read by hash; warm: cached), on
  the HTTP path (``GET /v1/models``, one request at a time; the admin key, always cached, is
  the baseline) and by the ``KeyRing`` call itself in this process;
* the gateway's resident memory after that;
* on PostgreSQL, a revocation: a key used on three gateways (two with Redis, one polling the
  change feed without it) is disabled through the first; the time until each other gateway
  refuses it.

Prints one table of figures (the docs page ``docs/performance/keys.md`` holds a run).
``--src DIR`` runs the gateways from another source tree (an earlier version, exported with
``git archive``) for a side-by-side run.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import time
import uuid
from collections import OrderedDict
from pathlib import Path

import httpx

import harness
from harness import ROOT

sys.path.insert(0, str(ROOT / "src"))

from inferd.auth.keys import KeyRing, _Entry, principal_from_row
from inferd.store.db import Database
from inferd.store.keys import KeyStore

ADMIN_KEY = "sk-inferd-bench-admin-0123456789abcdef"
POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
POSTGRES_DB = "inferd_bench_keys"
REDIS_URL = "redis://127.0.0.1:6379/0"
WORK = ROOT / ".bench" / "keys"


def bench_key(i: int) -> str:
    return f"sk-inferd-bench{i:08d}-x9Qm2LpZ7rT4vK1w"


def rows(count: int) -> list[tuple[object, ...]]:
    """``(name, owner, team, key_hash, prefix, scope, enabled, webhook_secret, created_at,
    updated_at)`` of the bulk keys."""
    now = time.time()
    out = []
    for i in range(count):
        key = bench_key(i)
        out.append(
            (
                f"bulk-{i}",
                f"user{i % 50_000}",
                f"team{i % 500}",
                hashlib.sha256(key.encode()).hexdigest(),
                key[:14],
                "user",
                True,
                "",
                now,
                now,
            )
        )
    return out


COLUMNS = [
    "name",
    "owner",
    "team",
    "key_hash",
    "prefix",
    "scope",
    "enabled",
    "webhook_secret",
    "created_at",
    "updated_at",
]


def fresh_postgres() -> str:
    import asyncpg

    async def recreate() -> None:
        conn = await asyncpg.connect(POSTGRES_ADMIN_URL)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{POSTGRES_DB}" WITH (FORCE)')
            await conn.execute(f'CREATE DATABASE "{POSTGRES_DB}"')
        finally:
            await conn.close()

    asyncio.run(recreate())
    return POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + "/" + POSTGRES_DB


def bulk_load(store: str, url: str, count: int, src: Path) -> float:
    """Migrate (with the code in ``src``), then insert ``count`` keys by direct SQL; seconds
    it took to insert."""
    env = {
        "PYTHONPATH": str(src),
        "INFERD_DATA_DIR": str(WORK),
        "INFERD_DATABASE_URL": url if store == "postgresql" else f"sqlite:///{url}",
    }
    subprocess.run(
        [sys.executable, "-m", "inferd", "migrate"],
        check=True,
        env={**os.environ, **env},
        capture_output=True,
    )
    data = rows(count)
    started = time.perf_counter()
    if store == "postgresql":
        import asyncpg

        async def copy() -> None:
            conn = await asyncpg.connect(url)
            try:
                await conn.copy_records_to_table("api_keys", records=data, columns=COLUMNS)
                await conn.execute("ANALYZE api_keys")
            finally:
                await conn.close()

        asyncio.run(copy())
    else:
        conn = sqlite3.connect(url)
        with conn:
            conn.executemany(
                f"INSERT INTO api_keys ({', '.join(COLUMNS)}) VALUES "
                f"({', '.join('?' * len(COLUMNS))})",
                data,
            )
        conn.execute("ANALYZE")
        conn.close()
    return time.perf_counter() - started


def start_gateway(
    store: str, url: str, data_dir: Path, src: Path, **env: str
) -> tuple[object, str, float]:
    data_dir.mkdir(parents=True, exist_ok=True)
    base = {
        "INFERD_ADMIN_KEY": ADMIN_KEY,
        "INFERD_AUTH": "on",
        "INFERD_LOG_LEVEL": "warning",
        "PYTHONPATH": str(src),
    }
    started = time.perf_counter()
    if store == "postgresql":
        proc, base_url = harness.start_inferd(
            data_dir,
            [],
            {**base, "INFERD_DATABASE_URL": url, **env},
            command="gateway",
            timeout=600,
        )
    else:
        proc, base_url = harness.start_inferd(
            data_dir,
            ["--no-bundled"],
            {**base, "INFERD_DATABASE_URL": f"sqlite:///{url}", **env},
            timeout=600,
        )
    return proc, base_url, time.perf_counter() - started


def cpu_seconds(proc: object) -> float:
    """User + system CPU time of the process so far."""
    stat = Path(f"/proc/{proc.pid}/stat").read_text()  # type: ignore[attr-defined]
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(proc: object) -> float:
    pid = proc.pid  # type: ignore[attr-defined]
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def create_keys(base_url: str, count: int, concurrency: int = 16) -> float:
    """Keys created per second through the admin API."""
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=60) as client:
        left = iter(range(count))

        async def worker() -> None:
            for i in left:
                response = await client.post("/admin/v1/keys", json={"name": f"api-{i}"})
                assert response.status_code == 201, response.text

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return count / (time.perf_counter() - started)


async def http_auth(base_url: str, keys: list[str]) -> dict[str, list[float]]:
    """Milliseconds per ``GET /v1/models``: each key on its first use, then each key again
    (cached) alternating with the admin key (the baseline, always cached)."""
    out: dict[str, list[float]] = {"cold": [], "warm": [], "admin": []}
    plan = [("cold", key) for key in keys]
    for key in keys:
        plan += [("warm", key), ("admin", ADMIN_KEY)]
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        for phase, key in plan:
            started = time.perf_counter()
            response = await client.get("/v1/models", headers={"Authorization": f"Bearer {key}"})
            out[phase].append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, response.text
    return out


async def ring_auth(url: str, keys: list[str]) -> dict[str, list[float]]:
    """Milliseconds per ``KeyRing.authenticate_fresh`` in this process: cold, then warm."""
    db = Database(url)
    ring = KeyRing(KeyStore(db), refresh_seconds=3600)
    await ring.start()
    out: dict[str, list[float]] = {"cold": [], "warm": []}
    try:
        for phase in ("cold", "warm"):
            for key in keys:
                started = time.perf_counter()
                await ring.authenticate_fresh(key)
                out[phase].append((time.perf_counter() - started) * 1000)
    finally:
        await ring.close()
        await db.close()
    return out


async def revocation(
    first: str, others: dict[str, str], key: dict[str, object]
) -> dict[str, float]:
    """Seconds from the disable's answer until each other gateway refuses the key."""
    bearer = {"Authorization": f"Bearer {key['key']}"}
    async with httpx.AsyncClient(timeout=30) as client:
        for url in [first, *others.values()]:  # cached everywhere
            assert (await client.get(url + "/v1/models", headers=bearer)).status_code == 200
        response = await client.post(
            f"{first}/admin/v1/keys/{key['id']}/disable",
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        )
        assert response.status_code == 200, response.text
        done = time.perf_counter()
        out: dict[str, float] = {}
        pending = dict(others)
        while pending:
            for name, url in list(pending.items()):
                status = (await client.get(url + "/v1/models", headers=bearer)).status_code
                if status == 401:
                    out[name] = time.perf_counter() - done
                    del pending[name]
            assert time.perf_counter() - done < 30, f"not revoked on {list(pending)}"
            await asyncio.sleep(0.005)
    return out


def fmt(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} / {harness.pct(values, 99):.3f}"


def run_store(store: str, args: argparse.Namespace) -> list[tuple[str, str]]:
    figures: list[tuple[str, str]] = []
    work = WORK / store
    work.mkdir(parents=True, exist_ok=True)
    if store == "postgresql":
        url = fresh_postgres()
        ring_url = url.replace("postgresql://", "postgresql+asyncpg://")
    else:
        url = str(work / "keys.db")
        for suffix in ("", "-wal", "-shm"):
            Path(url + suffix).unlink(missing_ok=True)
        ring_url = f"sqlite+aiosqlite:///{url}"
    loaded = bulk_load(store, url, args.keys, args.src)
    figures.append(("bulk load (direct SQL)", f"{args.keys:,} keys in {loaded:.1f} s"))
    prefix = f"bench-keys-{uuid.uuid4().hex[:8]}"
    redis = (
        {"INFERD_REDIS_URL": REDIS_URL, "INFERD_REDIS_PREFIX": prefix}
        if store == "postgresql"
        else {}
    )
    procs = []
    try:
        proc, base_url, took = start_gateway(store, url, work / "gw1", args.src, **redis)
        procs.append(proc)
        figures.append(("gateway start (to /ready)", f"{took:.1f} s"))
        figures.append(("gateway RSS after start", f"{rss_mb(proc):.0f} MB"))
        cpu = cpu_seconds(proc)
        rate = asyncio.run(create_keys(base_url, args.create))
        per_key = (cpu_seconds(proc) - cpu) / args.create * 1000
        figures.append(
            ("key creation via API, 16 at a time", f"{rate:.0f} keys/s ({args.create} keys)")
        )
        figures.append(
            (
                "gateway CPU per key created (keys/s one core allows)",
                f"{per_key:.2f} ms ({1000 / per_key:.0f}/s)",
            )
        )
        sample = [bench_key(i) for i in random.Random(7).sample(range(args.keys), args.auth)]
        http = asyncio.run(http_auth(base_url, sample))
        for phase in ("cold", "warm", "admin"):
            label = {
                "cold": "random key, first use (read by hash)",
                "warm": "random key, cached",
                "admin": "admin key (baseline)",
            }[phase]
            figures.append((f"HTTP GET /v1/models ms p50 / p99: {label}", fmt(http[phase])))
        figures.append((f"gateway RSS after {args.auth:,} keys used", f"{rss_mb(proc):.0f} MB"))
        if args.src != ROOT / "src":
            return figures  # another version's gateway: no ring call, no revocation here
        other = [bench_key(i) for i in random.Random(8).sample(range(args.keys), args.auth)]
        ring = asyncio.run(ring_auth(ring_url, other))
        figures.append(("KeyRing.authenticate_fresh ms p50 / p99: first use", fmt(ring["cold"])))
        figures.append(("KeyRing.authenticate_fresh ms p50 / p99: cached", fmt(ring["warm"])))
        if store == "postgresql" and args.revocations:
            proc2, url2, _ = start_gateway(store, url, work / "gw2", args.src, **redis)
            procs.append(proc2)
            proc3, url3, _ = start_gateway(store, url, work / "gw3", args.src)  # no Redis: the poll
            procs.append(proc3)
            times = []
            for _ in range(args.revocations):
                key = httpx.post(
                    base_url + "/admin/v1/keys",
                    json={"name": "revoked"},
                    headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                ).json()
                times.append(asyncio.run(revocation(base_url, {"redis": url2, "poll": url3}, key)))
            for name, label in (
                ("redis", "announced on Redis"),
                ("poll", "change feed poll (every 0.5 s)"),
            ):
                values = [t[name] * 1000 for t in times]
                figures.append(
                    (
                        f"revocation on another gateway, {label}: ms p50 / max",
                        f"{statistics.median(values):.0f} / {max(values):.0f}",
                    )
                )
    finally:
        for proc in procs:
            harness.stop(proc)  # type: ignore[arg-type]
    return figures


def cached_key_bytes(count: int = 20_000) -> float:
    """Bytes a cached key's principal takes (``tracemalloc`` over ``count`` of them, built from
    rows like the bulk keys', as the ring builds them)."""
    import tracemalloc

    now = time.time()
    tracemalloc.start()
    held: OrderedDict[str, _Entry] = OrderedDict()  # as the ring holds them: by hash, by id
    ids: dict[str, str] = {}
    for i, row in enumerate(rows(count)):
        values = dict(zip(COLUMNS, row, strict=True))
        values.update(
            id=1_000_000 + i,
            models=None,
            extra={},
            webhook_secret="whsec_" + "x" * 40,
            created_at=now,
            updated_at=now,
        )
        held[values["key_hash"]] = _Entry(values["key_hash"], principal_from_row(values), True)
        ids[str(values["id"])] = values["key_hash"]
    used = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return used / len(held)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stores", default="postgresql,sqlite")
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--create", type=int, default=2000, help="keys created via the API")
    parser.add_argument("--auth", type=int, default=2000, help="random keys authenticated")
    parser.add_argument("--revocations", type=int, default=5)
    parser.add_argument(
        "--src",
        type=Path,
        default=ROOT / "src",
        help="run the gateways from this source tree (another version, side by side: start, "
        "memory, creation and the HTTP figures only)",
    )
    args = parser.parse_args()
    os.environ.pop("INFERD_DATABASE_URL", None)
    for store in args.stores.split(","):
        print(f"\n== {store}: {args.keys:,} keys", flush=True)
        for name, value in run_store(store, args):
            print(f"  {name:<66} {value}", flush=True)
    per_key = cached_key_bytes()
    print(
        f"\na cached key's principal: {per_key:.0f} bytes "
        f"({per_key * 100_000 / 2**20:.0f} MB for a full cache of 100,000)"
    )
    print(f"\n(load average: {harness.load_average()})")


if __name__ == "__main__":
    main()
