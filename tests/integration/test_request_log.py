"""The request log on real stores (SQLite, PostgreSQL, MariaDB): records written in batches
through the spooled writer, paged newest first by cursor with every filter, and removed past
the retention (whole day partitions dropped on PostgreSQL, chunked deletes elsewhere)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from inferd.batchwriter import SpooledWriter
from inferd.reqlog import RequestLog, parse_cursor, status_range, trace_id
from inferd.store.db import Database
from inferd.store.request_log import (
    DAY,
    RequestLogSink,
    RequestLogStore,
    RequestQuery,
    RequestRecord,
    day_start,
    partition_name,
)

NOW = 1_765_000_000.0  # a fixed day: the retention below is counted from it


def record(created_at: float, **fields: Any) -> RequestRecord:
    values: dict[str, Any] = {
        "created_at": created_at, "request_id": None, "key_id": "1", "key_name": "svc",
        "model": "m1", "replica": "local:m1", "endpoint": "chat", "stream": False,
        "status": 200, "error": None, "latency_ms": 10.0, "ttft_ms": None,
        "prompt_tokens": 5, "completion_tokens": 7, "cached_tokens": None, "cost": 0.5,
        "attempts": 1, "client_address": "127.0.0.1", "user_agent": "OpenAI/Python",
        "trace_id": None}
    values.update(fields)
    return RequestRecord(**values)


async def read_all(log: RequestLog, query: RequestQuery, limit: int) -> list[dict[str, Any]]:
    """Every matching request, page after page by cursor."""
    rows: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = await log.page(query, cursor=cursor, limit=limit)
        assert len(page["data"]) <= limit
        rows.extend(page["data"])
        if not page["has_more"]:
            assert page["next_cursor"] is None
            return rows
        cursor = parse_cursor(page["next_cursor"])
        assert cursor is not None


async def test_pages_by_cursor_newest_first_with_ties(database: Database) -> None:
    store = RequestLogStore(database)
    # several requests of the same instant: the id orders them, no row twice or missed
    records = [record(NOW - (i // 3), request_id=f"r{i}") for i in range(40)]
    await store.insert_many(records)
    log = RequestLog(store, None)
    rows = await read_all(log, RequestQuery(), limit=7)
    assert sorted(r["request_id"] for r in rows) == sorted(f"r{i}" for i in range(40))
    keys = [(r["created_at"], int(r["id"])) for r in rows]
    assert keys == sorted(keys, reverse=True)
    assert len(set(keys)) == 40
    first = rows[0]
    assert first["object"] == "request" and first["stream"] is False
    assert first["total_tokens"] == 12 and first["cost"] == 0.5
    assert first["key_name"] == "svc" and first["user_agent"] == "OpenAI/Python"


async def test_every_filter(database: Database) -> None:
    store = RequestLogStore(database)
    await store.insert_many([
        record(NOW - 50, request_id="a", key_id="1", model="m1", status=200, latency_ms=5),
        record(NOW - 40, request_id="b", key_id="2", model="m1", status=429,
               error="rate_limit_exceeded", latency_ms=1),
        record(NOW - 30, request_id="c", key_id="2", model="m2", status=502,
               error="upstream_error", latency_ms=900, attempts=3),
        record(NOW - 20, request_id="d", key_id=None, key_name=None, model="m2", status=200,
               latency_ms=250, stream=True, ttft_ms=30.0, cached_tokens=4,
               trace_id="4bf92f3577b34da6a3ce929d0e0e4736"),
        record(NOW - 10, request_id="e", key_id="1", model="m1", status=499,
               error="client_closed", latency_ms=60),
    ])
    log = RequestLog(store, None)

    async def ids(**filters: Any) -> list[str]:
        return [r["request_id"] for r in await read_all(log, RequestQuery(**filters), 2)]

    assert await ids() == ["e", "d", "c", "b", "a"]
    assert await ids(since=NOW - 40, until=NOW - 10) == ["d", "c", "b"]
    assert await ids(key_id="2") == ["c", "b"]
    assert await ids(key_id=None, own=True) == ["d"]
    assert await ids(key_id="1", own=True) == ["e", "a"]
    assert await ids(model="m2") == ["d", "c"]
    assert await ids(status_from=429, status_to=430) == ["b"]
    assert await ids(status_from=400, status_to=500) == ["e", "b"]
    assert await ids(status_from=400) == ["e", "c", "b"]
    assert await ids(error="upstream_error") == ["c"]
    assert await ids(request_id="d") == ["d"]
    assert await ids(min_latency_ms=60) == ["e", "d", "c"]
    assert await ids(model="m1", status_from=400, min_latency_ms=10) == ["e"]
    [streamed] = await read_all(log, RequestQuery(request_id="d"), 1)
    assert streamed["stream"] is True and streamed["ttft_ms"] == 30.0
    assert streamed["cached_tokens"] == 4
    assert streamed["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    [failed] = await read_all(log, RequestQuery(request_id="c"), 1)
    assert failed["attempts"] == 3 and failed["error"] == "upstream_error"


async def test_user_and_team_filters(database: Database) -> None:
    store = RequestLogStore(database)
    big = 2**40  # ids are 64-bit on PostgreSQL and MariaDB
    await store.insert_many([
        record(NOW - 60, request_id="a", user_id=1, team_id=10),
        record(NOW - 50, request_id="b", user_id=2, team_id=10),
        record(NOW - 40, request_id="c", user_id=1, team_id=None),
        record(NOW - 30, request_id="d", user_id=None, team_id=20, key_id="2"),
        record(NOW - 20, request_id="e"),  # a key of no user or team
        record(NOW - 10, request_id="f", user_id=big, team_id=big + 1),
    ])
    log = RequestLog(store, None)

    async def ids(**filters: Any) -> list[str]:
        return [r["request_id"] for r in await read_all(log, RequestQuery(**filters), 2)]

    assert await ids(user_id=1) == ["c", "a"]
    assert await ids(user_id=2) == ["b"]
    assert await ids(team_id=10) == ["b", "a"]
    assert await ids(team_id=20) == ["d"]
    assert await ids(team_id=10, user_id=1) == ["a"]
    assert await ids(team_id=20, user_id=1) == []
    assert await ids(team_id=10, since=NOW - 55) == ["b"]
    assert await ids(team_id=20, key_id="1") == []
    assert await ids(user_id=big) == ["f"] and await ids(team_id=big + 1) == ["f"]
    assert await ids(team_id=99) == []
    rows = {r["request_id"]: r for r in await read_all(log, RequestQuery(), 10)}
    assert (rows["a"]["user_id"], rows["a"]["team_id"]) == (1, 10)
    assert (rows["c"]["user_id"], rows["c"]["team_id"]) == (1, None)
    assert (rows["e"]["user_id"], rows["e"]["team_id"]) == (None, None)
    assert (rows["f"]["user_id"], rows["f"]["team_id"]) == (big, big + 1)


def test_a_spooled_record_of_before_decodes_without_owners() -> None:
    """A record spooled by a process of the previous version (no user or team fields) is
    replayed as one of no user or team."""
    fields: list[Any] = list(record(NOW, request_id="old"))[:22]
    replayed = RequestRecord(*fields)
    assert replayed.request_id == "old"
    assert replayed.user_id is None and replayed.team_id is None


async def test_retention_removes_what_is_older(database: Database,
                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="inferd.reqlog")
    store = RequestLogStore(database)
    today = day_start(NOW)
    old = [record(today - 10 * DAY + i, request_id=f"old{i}") for i in range(5)]
    kept = [record(today - 2 * DAY + i, request_id=f"kept{i}") for i in range(3)]
    fresh = [record(NOW - i, request_id=f"new{i}") for i in range(4)]
    await store.insert_many(old + kept + fresh)
    log = RequestLog(store, None, retention_days=5)
    removed = await log.maintain(now=NOW)
    rows = await read_all(log, RequestQuery(), 100)
    assert sorted(r["request_id"] for r in rows) == sorted(
        [r.request_id or "" for r in kept + fresh])
    if store.partitioned:
        assert removed == 1  # the old day's partition, dropped whole
        # detached without blocking the table first (not the fallback of a plain drop)
        assert "not detached" not in caplog.text
        names = await store.partitions()
        assert partition_name(today - 10 * DAY) not in names
        assert {partition_name(today - 2 * DAY), partition_name(today)} <= set(names)
    else:
        assert removed == 5
    assert await log.maintain(now=NOW) == 0
    forever = RequestLog(store, None, retention_days=0)
    assert await forever.maintain(now=NOW + 1000 * DAY) == 0
    assert await store.count() == 7


async def test_chunked_deletes_remove_more_than_a_chunk(
        database: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    store = RequestLogStore(database)
    if store.partitioned:
        pytest.skip("PostgreSQL drops whole partitions")
    monkeypatch.setattr("inferd.store.request_log.DELETE_CHUNK", 3)
    await store.insert_many([record(NOW - 100 - i) for i in range(10)] + [record(NOW)])
    assert await store.prune(NOW - 50) == 10
    assert await store.count() == 1


async def test_partitions_are_created_ahead_and_for_any_day_written(
        database: Database) -> None:
    store = RequestLogStore(database)
    if not store.partitioned:
        pytest.skip("only PostgreSQL partitions the log")
    log = RequestLog(store, None)
    log.enabled = True  # as a process whose writer runs: maintenance creates days ahead
    today = day_start(NOW)
    await log.maintain(now=NOW)
    ahead = {partition_name(today + i * DAY) for i in range(3)}
    assert ahead <= set(await store.partitions())
    # a record of a day no partition holds yet: the writer creates its partition first
    await store.insert_many([record(today - 30 * DAY + 5, request_id="late")])
    assert partition_name(today - 30 * DAY) in await store.partitions()
    # another process (its own store object) finds the partitions there
    other = RequestLogStore(database)
    await other.insert_many([record(today + 1, request_id="other")])
    assert await other.ensure_partitions([today]) == []
    assert await store.count() == 2


async def test_the_spooled_writer_stores_every_record(database: Database,
                                                      tmp_path: Path) -> None:
    writer: SpooledWriter[RequestRecord] = SpooledWriter(
        lambda: RequestLogSink.open(database.url), decode=lambda f: RequestRecord(*f),
        directory=tmp_path / "spool", name="requests", flush_seconds=3600, batch_size=100)
    log = RequestLog(RequestLogStore(database), writer)
    await writer.start()
    try:
        for i in range(250):
            log.record(record(NOW + i * 0.001, request_id=f"w{i}"))
        await log.flush()
        assert writer.written == 250 and writer.rejected == 0
    finally:
        await log.close()
    rows = await read_all(log, RequestQuery(), 1000)
    assert len(rows) == 250
    # closed cleanly: nothing is left in a spool to replay
    assert not list((tmp_path / "spool").glob("*"))


def test_filters_and_headers_parse() -> None:
    assert status_range("429") == (429, 430)
    assert status_range("5xx") == (500, 600)
    assert status_range("error") == (400, None)
    assert status_range("abc") is None and status_range("600") is None
    assert parse_cursor("1765000000.5:42") == (1765000000.5, 42)
    assert parse_cursor("nan:1") is None and parse_cursor("12") is None
    assert parse_cursor("1.0:x") is None
    assert trace_id(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01") == \
        "4bf92f3577b34da6a3ce929d0e0e4736"
    assert trace_id(b"00-00000000000000000000000000000000-00f067aa0ba902b7-01") is None
    assert trace_id(b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01") is None
    assert trace_id(b"garbage") is None
