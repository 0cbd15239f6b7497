"""Repository of the request log (``request_log``): batch inserts, pages by cursor, retention.

Pages run newest first by ``(created_at, id)``; the cursor is the pair of the last row of the
previous page, so a page costs the same however deep it is (never an offset). On PostgreSQL
the table is partitioned by day (``tables_requests``): ``ensure_partitions`` creates the days
a batch needs (and the maintenance sweep the next ones ahead), and retention drops whole
partitions; on SQLite and MariaDB retention deletes in chunks of ``DELETE_CHUNK`` rows, each
its own transaction, so that it never holds a long lock.
"""

from __future__ import annotations

import datetime
import logging
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection

from inferd.store.db import Database
from inferd.store.tables_control import spool_marks as m
from inferd.store.tables_requests import request_log as t
from inferd.store.usage import set_mark

log = logging.getLogger("inferd.reqlog")

DAY = 86400.0
DELETE_CHUNK = 10_000
PARTITION_PREFIX = "request_log_p"
_PARTITION = re.compile(r"request_log_p(\d{8})\Z")
_EXISTS = sa.text("SELECT to_regclass(:name) IS NOT NULL")
_PARTITIONS = sa.text(
    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
    "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = :parent")


class RequestRecord(NamedTuple):
    """One request: one row of ``request_log``, its fields in column order (a tuple, so that
    a batch goes to the driver's executemany as it is)."""

    created_at: float
    request_id: str | None
    key_id: str | None
    key_name: str | None
    model: str
    replica: str | None
    endpoint: str
    stream: bool
    status: int
    error: str | None
    latency_ms: float
    ttft_ms: float | None
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int | None
    cost: float
    attempts: int
    client_address: str | None
    user_agent: str | None
    trace_id: str | None
    request_body: str | None = None  # a key with ``log_bodies`` only
    response_body: str | None = None
    user_id: int | None = None  # the key's user and team when the request was made
    team_id: int | None = None


FIELDS = RequestRecord._fields
SQLITE_ROWS = 1024  # rows per multi-row INSERT on SQLite (24 parameters a row, under 32,766)


@dataclass(frozen=True, slots=True)
class RequestQuery:
    """Filters of a page of requests (None: any)."""

    since: float | None = None  # created_at >= since
    until: float | None = None  # created_at < until
    key_id: str | None = None
    # True: only the rows of ``key_id`` (None then means the requests made without a key)
    own: bool = False
    model: str | None = None
    status_from: int | None = None  # status >= status_from
    status_to: int | None = None  # status < status_to
    error: str | None = None
    request_id: str | None = None
    min_latency_ms: float | None = None
    user_id: int | None = None  # the key's user when the request was made
    team_id: int | None = None  # the key's team when the request was made


Cursor = tuple[float, int]  # (created_at, id) of the last row of the previous page


def day_start(when: float) -> float:
    """The start (UTC midnight, epoch seconds) of the day of ``when``."""
    return math.floor(when / DAY) * DAY


def partition_name(start: float) -> str:
    day = datetime.datetime.fromtimestamp(start, datetime.UTC)
    return f"{PARTITION_PREFIX}{day:%Y%m%d}"


def partition_start(name: str) -> float | None:
    """The start of the day a partition holds, from its name (None: not a day partition)."""
    match = _PARTITION.match(name)
    if match is None:
        return None
    day = datetime.datetime.strptime(match.group(1), "%Y%m%d").replace(tzinfo=datetime.UTC)
    return day.timestamp()


def _compiled_insert(dialect: sa.Dialect) -> tuple[str, bool]:
    """The INSERT of one row, compiled for ``dialect``: (SQL, whether positional)."""
    compiled = sa.insert(t).values({f: sa.bindparam(f) for f in FIELDS}).compile(
        dialect=dialect)
    order = compiled.positiontup
    if compiled.positional and order is not None and tuple(order) != FIELDS:
        raise RuntimeError(f"unexpected parameter order {order}")
    return str(compiled), bool(compiled.positional)


class RequestLogStore:
    """Writes, pages and prunes the request log."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.partitioned = db.dialect == "postgresql"
        # the days whose partition this object created or found (PostgreSQL)
        self._days: set[float] = set()
        self._insert_sql: tuple[str, bool] | None = None

    async def _insert(self, conn: AsyncConnection, records: Sequence[RequestRecord]) -> None:
        """SQLite: multi-row INSERTs (one statement each); PostgreSQL: one COPY; MariaDB: one
        executemany of the statement compiled once (aiomysql makes multi-row INSERTs)."""
        if conn.dialect.name == "sqlite":
            row = "(" + ", ".join("?" * len(FIELDS)) + ")"
            head = f"INSERT INTO {t.name} ({', '.join(FIELDS)}) VALUES "
            for start in range(0, len(records), SQLITE_ROWS):
                chunk = records[start:start + SQLITE_ROWS]
                await conn.exec_driver_sql(head + ", ".join([row] * len(chunk)),
                                           tuple(v for r in chunk for v in r))
            return
        if conn.dialect.name == "postgresql":
            # COPY, in the caller's transaction: several times an executemany's rate
            raw = await conn.get_raw_connection()
            await raw.driver_connection.copy_records_to_table(  # type: ignore[union-attr]
                t.name, records=records, columns=FIELDS)
            return
        if self._insert_sql is None:
            self._insert_sql = _compiled_insert(conn.dialect)
        sql, positional = self._insert_sql
        params: Any = (list(records) if positional
                       else [dict(zip(FIELDS, r, strict=True)) for r in records])
        await conn.exec_driver_sql(sql, params)

    # -- writing ---------------------------------------------------------------------------
    async def ensure_partitions(self, days: Iterable[float]) -> list[str]:
        """Create the missing partitions of ``days`` (day starts; PostgreSQL only); the
        names created. Each in its own transaction: a partition another process created at
        the same moment is not an error."""
        created: list[str] = []
        if not self.partitioned:
            return created
        for start in days:
            if start in self._days:
                continue
            name = partition_name(start)
            try:
                async with self.db.engine.begin() as conn:
                    exists = (await conn.execute(_EXISTS, {"name": name})).scalar()
                    if not exists:
                        await conn.exec_driver_sql(
                            f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF {t.name} "
                            f"FOR VALUES FROM ({start!r}) TO ({start + DAY!r})")
                        created.append(name)
            except sa_exc.DBAPIError:
                async with self.db.engine.connect() as conn:  # raced: is it there now?
                    exists = (await conn.execute(_EXISTS, {"name": name})).scalar()
                if not exists:
                    raise
            self._days.add(start)
        return created

    async def insert_many(self, records: Sequence[RequestRecord], spool: str | None = None,
                          last: int = 0) -> None:
        """Insert ``records`` in one transaction (with ``last`` as ``spool``'s mark)."""
        if not records:
            return
        if self.partitioned:
            await self.ensure_partitions(sorted({day_start(r[0]) for r in records}))
        async with self.db.engine.begin() as conn:
            await self._insert(conn, records)
            if spool is not None:
                await set_mark(conn, spool, last)

    # -- reading ---------------------------------------------------------------------------
    async def page(self, query: RequestQuery, *, after: Cursor | None = None,
                   limit: int = 50) -> tuple[list[dict[str, Any]], bool]:
        """Up to ``limit`` requests matching ``query``, newest first, older than ``after``;
        and whether there are more."""
        where: list[sa.ColumnElement[bool]] = []
        if after is not None:
            # the plain bound lets every store range-scan its index; the pair orders ties
            where.append(t.c.created_at <= after[0])
            where.append(sa.tuple_(t.c.created_at, t.c.id) < sa.tuple_(
                sa.literal(after[0], sa.Double), sa.literal(after[1], sa.BigInteger)))
        if query.since is not None:
            where.append(t.c.created_at >= query.since)
        if query.until is not None:
            where.append(t.c.created_at < query.until)
        if query.own or query.key_id is not None:
            where.append(t.c.key_id.is_(None) if query.key_id is None
                         else t.c.key_id == query.key_id)
        if query.model is not None:
            where.append(t.c.model == query.model)
        if query.status_from is not None:
            where.append(t.c.status >= query.status_from)
        if query.status_to is not None:
            where.append(t.c.status < query.status_to)
        if query.error is not None:
            where.append(t.c.error == query.error)
        if query.request_id is not None:
            where.append(t.c.request_id == query.request_id)
        if query.min_latency_ms is not None:
            where.append(t.c.latency_ms >= query.min_latency_ms)
        if query.user_id is not None:
            where.append(t.c.user_id == query.user_id)
        if query.team_id is not None:
            where.append(t.c.team_id == query.team_id)
        statement = (sa.select(t).where(*where)
                     .order_by(t.c.created_at.desc(), t.c.id.desc()).limit(limit + 1))
        async with self.db.engine.connect() as conn:
            rows = [dict(r._mapping) for r in await conn.execute(statement)]
        return rows[:limit], len(rows) > limit

    async def count(self) -> int:
        async with self.db.engine.connect() as conn:
            return int((await conn.execute(sa.select(sa.func.count()).select_from(t)))
                       .scalar() or 0)

    # -- retention -------------------------------------------------------------------------
    async def partitions(self) -> list[str]:
        """The day partitions (PostgreSQL), oldest first."""
        if not self.partitioned:
            return []
        async with self.db.engine.connect() as conn:
            names = (await conn.execute(_PARTITIONS, {"parent": t.name})).scalars().all()
        return sorted(str(n) for n in names if _PARTITION.match(str(n)))

    async def _drop(self, name: str) -> None:
        """Drop a day partition: detached first without blocking the table's readers and
        writers (``DETACH ... CONCURRENTLY``, outside a transaction), then dropped alone;
        where that is refused (a detach left pending), dropped at once."""
        try:
            async with self.db.engine.connect() as conn:
                auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
                await auto.exec_driver_sql(
                    f"ALTER TABLE {t.name} DETACH PARTITION {name} CONCURRENTLY")
        except sa_exc.DBAPIError as exc:
            log.info("request log: %s not detached concurrently (%s), dropped at once",
                     name, str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__)
        async with self.db.engine.begin() as conn:
            await conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")

    async def prune(self, before: float) -> int:
        """Remove the requests older than ``before``: on PostgreSQL the partitions whose
        whole day is older (dropped, not deleted: how many partitions), elsewhere the rows,
        in chunks (how many rows)."""
        if self.partitioned:
            dropped = 0
            for name in await self.partitions():
                start = partition_start(name)
                if start is None or start + DAY > before:
                    continue
                await self._drop(name)
                self._days.discard(start)
                dropped += 1
            return dropped
        if self.db.dialect == "sqlite":
            sql = sa.text(f"DELETE FROM {t.name} WHERE id IN (SELECT id FROM {t.name} "
                          f"WHERE created_at < :before ORDER BY created_at "
                          f"LIMIT {DELETE_CHUNK})")
        else:  # MariaDB/MySQL: a single-table DELETE takes a LIMIT
            sql = sa.text(f"DELETE FROM {t.name} WHERE created_at < :before "
                          f"ORDER BY created_at LIMIT {DELETE_CHUNK}")
        removed = 0
        while True:
            async with self.db.engine.begin() as conn:
                result = await conn.execute(sql, {"before": before})
            count = int(result.rowcount or 0)
            removed += count
            if count < DELETE_CHUNK:
                return removed


class RequestLogSink:
    """The request log writer's store, on its writer thread: a database engine of its own."""

    def __init__(self, store: RequestLogStore) -> None:
        self.store = store

    @classmethod
    async def open(cls, url: str) -> RequestLogSink:
        return cls(RequestLogStore(Database(url)))

    async def write(self, records: Sequence[RequestRecord], spool: str | None,
                    last: int) -> None:
        try:
            await self.store.insert_many(records, spool, last)
        except Exception:
            await self.store.db.engine.dispose()  # no connection held while writes fail
            raise

    async def last(self, spool: str) -> int:
        async with self.store.db.engine.connect() as conn:
            seq = (await conn.execute(sa.select(m.c.seq).where(m.c.spool == spool))).scalar()
        return int(seq or 0)

    async def forget(self, spool: str) -> None:
        async with self.store.db.engine.begin() as conn:
            await conn.execute(m.delete().where(m.c.spool == spool))

    async def close(self) -> None:
        await self.store.db.engine.dispose()
