"""The request log at scale on PostgreSQL: a filtered page of 50, retention, and ingest.

    PYTHONPATH=src .venv/bin/python bench/request_log.py [--rows 10000000] [--days 14]
        [--queries 40] [--ingest 200000] [--admin-dsn postgresql://postgres@127.0.0.1:5432/postgres]

In a fresh PostgreSQL database (created and dropped here), migrated as inferd migrates it:

1. ``--rows`` generated requests spread over ``--days`` days (1,000 keys of 50 teams and 300
   users, 20 models, 95 % 200,
   3 % 429, 1 % 502 ``upstream_error``, 1 % 499; latencies exponential around 500 ms), inserted
   with ``INSERT ... SELECT FROM generate_series`` into the day partitions, then ``ANALYZE``;
2. pages of 50 through ``RequestLogStore.page`` (the API's query) for random filters of each
   kind: none, key, model, status class, error code, least latency, a one-hour window,
   key and model, request id, team (indexed), user (not), and the 5th page by cursor; the
   median and the 95th percentile per kind (warm cache: each kind's queries run after one
   untimed query of that kind);
3. retention: dropping the oldest day's partition (what the maintenance sweep does);
4. the request path's cost: ``Metering.finish`` (metrics, the usage record, and the request
   log's record) with the log on and off, over ``--finishes`` calls from an HTTP request's
   scope (user agent and ``traceparent`` headers), the ratio printed;
5. ingest: ``--ingest`` records through the spooled writer (``RequestLog.record``, the request
   path's only cost, then the writer thread's batches into the partitioned table), offered as
   fast as the writer thread takes them off the queue: records a second from the first
   ``record`` to the last row stored; and the cost of one ``record``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from inferd.batchwriter import SpooledWriter
from inferd.reqlog import RequestLog
from inferd.store.db import Database
from inferd.store.request_log import (
    DAY,
    RequestLogSink,
    RequestLogStore,
    RequestQuery,
    RequestRecord,
    day_start,
)

KEYS, MODELS = 1000, 20
TEAMS, USERS = 50, 300  # key k belongs to team k % TEAMS and user k % USERS
ROUND = 2000  # Metering.finish calls per timed round
CHUNK = 1_000_000

GENERATE = f"""
INSERT INTO request_log (created_at, request_id, key_id, key_name, model, replica, endpoint,
    stream, status, error, latency_ms, ttft_ms, prompt_tokens, completion_tokens,
    cached_tokens, cost, attempts, client_address, user_agent, trace_id, user_id, team_id)
SELECT $1 + (g - $2)::float8 * $3,
       md5(g::text),
       (g % {KEYS})::text, 'key-' || (g % {KEYS}),
       'model-' || ((g / 7) % {MODELS}), 'replica-' || ((g / 7) % {MODELS}) || '-' || (g % 3),
       CASE WHEN g % 5 = 0 THEN 'embeddings' ELSE 'chat' END,
       g % 2 = 0,
       CASE WHEN r < 0.95 THEN 200 WHEN r < 0.98 THEN 429 WHEN r < 0.99 THEN 502 ELSE 499 END,
       CASE WHEN r < 0.95 THEN NULL WHEN r < 0.98 THEN 'rate_limit_exceeded'
            WHEN r < 0.99 THEN 'upstream_error' ELSE 'client_closed' END,
       -500.0 * ln(1.0 - l), CASE WHEN g % 2 = 0 THEN 30.0 + 100.0 * l END,
       (50 + g % 2000)::int, (g % 500)::int, CASE WHEN g % 4 = 0 THEN 32 END,
       (g % 1000) / 1e6, CASE WHEN r >= 0.98 AND r < 0.99 THEN 3 ELSE 1 END,
       '10.0.' || (g % 250) || '.' || (g % 200), 'OpenAI/Python 1.59.0',
       CASE WHEN g % 3 = 0 THEN md5((g * 7)::text) END,
       (g % {KEYS}) % {USERS}, (g % {KEYS}) % {TEAMS}
FROM (SELECT g, random() AS r, random() AS l FROM generate_series($2::bigint, $4::bigint) g) s
"""


def filters(rng: random.Random, start: float, span: float, rows: int) -> dict[str, Any]:
    """Random filters of each kind (the dict: RequestQuery's fields)."""
    hour = start + rng.random() * (span - 3600)
    return {
        "none": {},
        "key": {"key_id": str(rng.randrange(KEYS))},
        "model": {"model": f"model-{rng.randrange(MODELS)}"},
        "status 4xx": {"status_from": 400, "status_to": 500},
        "error code": {"error": rng.choice(["upstream_error", "client_closed",
                                            "rate_limit_exceeded"])},
        "latency >= 1-3 s": {"min_latency_ms": rng.uniform(1000, 3000)},
        "one hour": {"since": hour, "until": hour + 3600},
        "key + model": {"key_id": str(rng.randrange(KEYS)),
                        "model": f"model-{rng.randrange(MODELS)}"},
        "request id": {"request_id": _md5(rng.randrange(1, rows + 1))},
        "team": {"team_id": rng.randrange(TEAMS)},
        "user": {"user_id": rng.randrange(USERS)},
    }


def _md5(value: int) -> str:
    import hashlib

    return hashlib.md5(str(value).encode()).hexdigest()


async def timed(work: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = await work()
    return (time.perf_counter() - started) * 1000.0, result


async def fill(dsn: str, store: RequestLogStore, rows: int, days: int) -> tuple[float, float]:
    """Generate the rows; (first created_at, span in seconds)."""
    span = days * DAY
    start = day_start(time.time()) - span + 1.0
    await store.ensure_partitions(day_start(start) + i * DAY for i in range(days + 2))
    step = span / rows
    conn = await asyncpg.connect(dsn)
    try:
        began = time.perf_counter()
        for low in range(1, rows + 1, CHUNK):
            high = min(rows, low + CHUNK - 1)
            await conn.execute(GENERATE, start + (low - 1) * step, low, step, high)
        await conn.execute("ANALYZE request_log")
        seconds = time.perf_counter() - began
        size = await conn.fetchval(
            "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent "
            "WHERE p.relname = 'request_log'")
    finally:
        await conn.close()
    print(f"generated {rows:,} rows over {days} days in {seconds:.1f} s "
          f"({rows / seconds:,.0f} rows/s); table and indexes {int(size) / 2**20:,.0f} MiB")
    return start, span


async def pages(store: RequestLogStore, rows: int, start: float, span: float,
                queries: int) -> None:
    rng = random.Random(7)
    kinds = list(filters(rng, start, span, rows))
    print(f"a page of 50, {queries} random filters of each kind (ms):")
    print(f"  {'filter':<20} {'median':>8} {'p95':>8} {'rows':>6}")
    medians = []
    for kind in [*kinds, "5th page (cursor)"]:
        samples, found = [], 0
        for i in range(queries + 1):
            if kind == "5th page (cursor)":
                query = RequestQuery(**filters(rng, start, span, rows)["model"])
                cursor = None
                began = time.perf_counter()
                for _ in range(5):
                    data, _more = await store.page(query, after=cursor, limit=50)
                    last = data[-1]
                    cursor = (last["created_at"], last["id"])
                ms = (time.perf_counter() - began) * 1000.0 / 5
            else:
                query = RequestQuery(**filters(rng, start, span, rows)[kind])
                ms, (data, _more) = await timed(lambda q=query: store.page(q, limit=50))
            if i:  # the first warms the cache
                samples.append(ms)
                found += len(data)
        samples.sort()
        median = statistics.median(samples)
        medians.append(median)
        p95 = samples[min(len(samples) - 1, int(0.95 * len(samples)))]
        print(f"  {kind:<20} {median:8.2f} {p95:8.2f} {found / len(samples):6.1f}")
    print(f"  median of the kinds' medians: {statistics.median(medians):.2f} ms")


async def retention(store: RequestLogStore, start: float) -> None:
    before = day_start(start) + DAY  # the oldest day, whole
    count = await store.count()
    ms, dropped = await timed(lambda: store.prune(before))
    left = await store.count()
    print(f"retention: dropped {dropped} day partition(s), {count - left:,} rows, "
          f"in {ms:.1f} ms")


async def ingest(url: str, count: int) -> None:
    with tempfile.TemporaryDirectory() as spool:
        writer: SpooledWriter[RequestRecord] = SpooledWriter(
            lambda: RequestLogSink.open(url), decode=lambda f: RequestRecord(*f),
            directory=Path(spool), name="requests", flush_seconds=1.0, batch_size=2000,
            max_pending=100_000)
        log = RequestLog(RequestLogStore(Database(url)), writer)
        await writer.start()
        now = time.time()
        records = [RequestRecord(now + i * 1e-6, uuid.uuid4().hex, str(i % KEYS), "bench",
                                 f"model-{i % MODELS}", "replica-0", "chat", i % 2 == 0, 200,
                                 None, 120.5, 30.2, 100, 50, None, 0.001, 1, "10.0.0.1",
                                 "OpenAI/Python 1.59.0", None) for i in range(count)]
        began = time.perf_counter()
        spent = 0.0
        for low in range(0, count, 5000):  # bursts, as requests come: the loop yields between
            while writer.queued > 20_000:  # noqa: ASYNC110 - as fast as the thread spools
                await asyncio.sleep(0.002)
            burst = time.perf_counter()
            for record in records[low:low + 5000]:
                log.record(record)
            spent += time.perf_counter() - burst
            await asyncio.sleep(0.001)
        await log.flush()
        seconds = time.perf_counter() - began
        await log.close()
        assert writer.written == count and writer.dropped == 0, (writer.written,
                                                                 writer.dropped)
    print(f"ingest: {count:,} records stored in {seconds:.2f} s: {count / seconds:,.0f} "
          f"records/s through the spooled writer; RequestLog.record costs "
          f"{spent / count * 1e9:.0f} ns on the event loop")


async def finish_cost(count: int) -> None:
    """Nanoseconds per ``Metering.finish`` with the request log on and off (the median of
    alternating rounds; the writers are not started: ``record`` only queues)."""
    from inferd.audit import request_scope
    from inferd.auth.principal import Principal
    from inferd.metering import Call, Metering
    from inferd.usage import UsageRecorder

    async def nowhere() -> Any:
        raise RuntimeError("not started")

    scope = {"type": "http", "client": ("10.0.0.7", 50123), "state": {},
             "headers": [(b"host", b"inferd"), (b"user-agent", b"OpenAI/Python 1.59.0"),
                         (b"content-type", b"application/json"),
                         (b"authorization", b"Bearer sk-..."),
                         (b"traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-"
                                          b"00f067aa0ba902b7-01")]}
    request_scope.set(scope)
    principal = Principal(key_id="12", name="checkout", scope="user")
    usage = {"prompt_tokens": 120, "completion_tokens": 40, "total_tokens": 160}

    def metering(on: bool) -> Metering:
        writer: SpooledWriter[RequestRecord] = SpooledWriter(
            nowhere, decode=lambda f: RequestRecord(*f), max_pending=10 * ROUND)
        requests = RequestLog(None, writer if on else None)
        return Metering(None, UsageRecorder(nowhere, max_pending=10 * ROUND),  # type: ignore[arg-type]
                        requests=requests)

    def run(target: Metering) -> float:
        calls = [Call("chat", "m", principal, False) for _ in range(ROUND)]
        for call in calls:
            call.replica = "local:m"
        began = time.perf_counter_ns()
        for call in calls:
            target.finish(call, usage, 200, None)
        return (time.perf_counter_ns() - began) / ROUND

    # rounds of 2,000 calls on a fresh Metering each (the writers are not started, so the
    # records stay queued: short rounds keep that from growing the garbage collector's work)
    rounds: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(max(1, count // ROUND)):
        for on in (False, True):
            rounds[on].append(run(metering(on)))
    off, on = statistics.median(rounds[False]), statistics.median(rounds[True])
    print(f"Metering.finish: {off:,.0f} ns without the request log, {on:,.0f} ns with it "
          f"(ratio {on / off:.2f})")


async def main(args: argparse.Namespace) -> None:
    name = f"inferd_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(args.admin_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    base = args.admin_dsn.rsplit("/", 1)[0]
    dsn = f"{base}/{name}"
    url = "postgresql+asyncpg://" + dsn.split("://", 1)[1]
    try:
        db = Database(url)
        await db.migrate()
        store = RequestLogStore(db)
        start, span = await fill(dsn, store, args.rows, args.days)
        await pages(store, args.rows, start, span, args.queries)
        await retention(store, start)
        await db.engine.dispose()
        await finish_cost(args.finishes)
        await ingest(url, args.ingest)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--queries", type=int, default=40)
    parser.add_argument("--ingest", type=int, default=200_000)
    parser.add_argument("--finishes", type=int, default=100_000)
    parser.add_argument("--admin-dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    asyncio.run(main(parser.parse_args()))
