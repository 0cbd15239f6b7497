"""Storage faults told apart from bad input and lost connections, answered 503 (or 400 for a
value the database refuses), and counted by ``WriteHealth`` for readiness."""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import httpx
import pymysql
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from sqlalchemy import event
from sqlalchemy import exc as sa_exc

from inferd.http.errors import install
from inferd.store.db import Database
from inferd.store.faults import FULL, IO, READ_ONLY, WriteHealth, bad_value, storage_fault
from inferd.store.tables import kv


def _sqlite_error(name: str, message: str) -> sqlite3.OperationalError:
    exc = sqlite3.OperationalError(message)
    exc.sqlite_errorname = name  # type: ignore[attr-defined]  # set by sqlite3 for real errors
    return exc


def _wrapped(orig: BaseException, kind: type[sa_exc.DBAPIError] = sa_exc.OperationalError,
             ) -> sa_exc.DBAPIError:
    return kind("INSERT INTO jobs ...", {}, orig)


@pytest.mark.parametrize(("error", "fault"), [
    (_sqlite_error("SQLITE_FULL", "database or disk is full"), FULL),
    (_sqlite_error("SQLITE_READONLY", "attempt to write a readonly database"), READ_ONLY),
    (_sqlite_error("SQLITE_READONLY_DBMOVED", "attempt to write a readonly database"),
     READ_ONLY),
    (_sqlite_error("SQLITE_IOERR_WRITE", "disk I/O error"), IO),
    (_sqlite_error("SQLITE_BUSY", "database is locked"), None),
    (asyncpg.exceptions.DiskFullError("could not extend file"), FULL),
    (asyncpg.exceptions.ReadOnlySQLTransactionError("read-only transaction"), READ_ONLY),
    (asyncpg.exceptions.StringDataRightTruncationError("value too long"), None),
    (pymysql.err.OperationalError(1021, "Disk full"), FULL),
    (pymysql.err.OperationalError(1114, "The table 'jobs' is full"), FULL),
    (pymysql.err.OperationalError(1290, "running with the --read-only option"), READ_ONLY),
    (pymysql.err.OperationalError(2013, "Lost connection"), None),
    (OSError(errno.ENOSPC, "No space left on device"), FULL),
    (OSError(errno.EROFS, "Read-only file system"), READ_ONLY),
    (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), None),
])
def test_storage_faults_are_named_through_the_wrapping(error: BaseException,
                                                       fault: str | None) -> None:
    assert storage_fault(error) == fault
    assert storage_fault(_wrapped(error)) == fault


def test_a_refused_value_is_bad_input_not_a_storage_fault() -> None:
    truncated = asyncpg.exceptions.StringDataRightTruncationError("value too long")
    assert bad_value(_wrapped(truncated, sa_exc.DataError))
    assert bad_value(_wrapped(truncated, sa_exc.DBAPIError))  # as asyncpg's reach SQLAlchemy
    assert bad_value(_wrapped(pymysql.err.DataError(1406, "Data too long"), sa_exc.DataError))
    assert not bad_value(_wrapped(asyncpg.exceptions.UniqueViolationError("duplicate"),
                                  sa_exc.DBAPIError))
    assert not bad_value(_wrapped(_sqlite_error("SQLITE_FULL", "full"), sa_exc.DataError))


def _app() -> FastAPI:
    app = FastAPI()
    install(app)
    errors: dict[str, Exception] = {
        "full": _wrapped(_sqlite_error("SQLITE_FULL", "database or disk is full")),
        "readonly": _wrapped(asyncpg.exceptions.ReadOnlySQLTransactionError("read-only")),
        "file": OSError(errno.ENOSPC, "No space left on device"),
        "value": _wrapped(asyncpg.exceptions.StringDataRightTruncationError("too long"),
                          sa_exc.DataError),
        "lost": _wrapped(ConnectionResetError("reset")),
        "other": OSError(errno.ENOENT, "No such file"),
    }

    @app.get("/fail/{name}")
    async def fail(name: str) -> None:
        raise errors[name]

    return app


@pytest.mark.parametrize(("name", "status", "code", "words"), [
    ("full", 503, "store_unavailable", "full"),
    ("readonly", 503, "store_unavailable", "read-only"),
    ("file", 503, "store_unavailable", "full"),
    ("value", 400, "invalid_value", "cannot be stored"),
    ("lost", 503, "store_unavailable", "unreachable"),
    ("other", 500, "internal_error", "server had an error"),
])
async def test_storage_errors_are_answered_in_the_openai_shape(name: str, status: int,
                                                               code: str, words: str) -> None:
    transport = httpx.ASGITransport(app=_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get(f"/fail/{name}")
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code and words in error["message"]
    if status == 503:
        assert error["type"] == "service_unavailable" and response.headers["retry-after"]


def test_write_health_counts_failures_in_a_row() -> None:
    health = WriteHealth(threshold=2)
    health.failed(FULL)
    assert health.ok
    health.failed(FULL)
    assert not health.ok and health.last_fault == FULL
    health.succeeded()
    assert health.ok and health.last_fault is None


async def test_a_full_database_is_not_writable_until_space_returns(tmp_path: Path) -> None:
    """SQLite's ``max_page_count`` makes the database full at a chosen size: writes fail with
    SQLITE_FULL, ``writable()`` turns false after the threshold, and true again (through its
    own probe write) once the database may grow."""
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'full.db'}", unready_after_failed_writes=2)
    await db.migrate()
    limit = {"pages": 0}

    def cap(dbapi_connection: object, _record: object) -> None:
        if limit["pages"]:
            cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
            cursor.execute(f"PRAGMA max_page_count={limit['pages']}")
            cursor.close()

    event.listen(db.engine.sync_engine, "connect", cap)
    try:
        async with db.engine.connect() as conn:
            pages = (await conn.execute(sa.text("PRAGMA page_count"))).scalar_one()
        limit["pages"] = pages
        await db.engine.dispose()  # new connections: capped at the current size
        failures = 0
        for i in range(200):
            try:
                async with db.engine.begin() as conn:
                    await conn.execute(sa.insert(kv).values(key=f"k{i}", value="v" * 20_000,
                                                            updated_at=0.0))
            except sa_exc.OperationalError as exc:
                assert storage_fault(exc) == FULL
                failures += 1
                if failures == 2:
                    break
        assert failures == 2 and not db.writes.ok
        assert not await db.writable()
        limit["pages"] = 0
        await db.engine.dispose()  # space returns
        db._probed = 0.0  # the probe may run at once (it runs at most once a second)
        assert await db.writable()
        assert db.writes.ok and db.writes.failures == 0
    finally:
        await db.close()
