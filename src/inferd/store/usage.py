"""Repository for usage records (the ``metrics`` table): batch inserts and aggregates."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from inferd.store.db import Database
from inferd.store.tables_control import api_keys, teams, users
from inferd.store.tables_control import spool_marks as m
from inferd.store.tables_control import usage_records as t
from inferd.usage import UsageRecord

GroupBy = Literal["key", "model", "time", "user", "team"]
BUCKETS = {"minute": 60, "hour": 3600, "day": 86400}

# The columns ``insert_records`` writes, in the order of a record's fields.
FIELDS = UsageRecord._fields


# The compiled insert per dialect: (SQL, whether its parameters are positional).
# Module-level on purpose: a cache of immutable strings, the same for every database of a
# dialect (allowed in tests/unit/test_module_state.py), as is _SQLITE_ROWS below.
_INSERTS: dict[str, tuple[str, bool]] = {}
# SQLite: rows per multi-row INSERT (18 parameters a row, under its limit of 32,766), and the
# statements of 1, 2, 4 ... ROWS rows (a batch is cut into those).
ROWS = 1024
_SQLITE_ROWS: dict[int, str] = {}


def _insert_sql(dialect: sa.Dialect) -> tuple[str, bool]:
    cached = _INSERTS.get(dialect.name)
    if cached is None:
        compiled = sa.insert(t).values({f: sa.bindparam(f) for f in FIELDS}).compile(
            dialect=dialect)
        order = compiled.positiontup
        if compiled.positional and order is not None and tuple(order) != FIELDS:
            raise RuntimeError(f"unexpected parameter order {order}")
        cached = _INSERTS[dialect.name] = (str(compiled), bool(compiled.positional))
    return cached


def _sqlite_rows(count: int) -> str:
    """The SQLite INSERT of ``count`` rows (a power of two up to ``ROWS``)."""
    sql = _SQLITE_ROWS.get(count)
    if sql is None:
        row = "(" + ", ".join("?" * len(FIELDS)) + ")"
        sql = _SQLITE_ROWS[count] = (f"INSERT INTO {t.name} ({', '.join(FIELDS)}) VALUES "
                                     + ", ".join([row] * count))
    return sql


async def _insert_sqlite(conn: AsyncConnection, records: Sequence[UsageRecord]) -> None:
    """Multi-row INSERTs: SQLite runs each as one statement, where an executemany steps once
    per row (and takes Python's lock back for each: slow when the event loop is busy)."""
    start, total = 0, len(records)
    while start < total:
        count = ROWS
        while count > total - start:
            count //= 2
        chunk = records[start:start + count]
        await conn.exec_driver_sql(_sqlite_rows(count), tuple(v for r in chunk for v in r))
        start += count


async def insert_records(conn: AsyncConnection, records: Sequence[UsageRecord]) -> None:
    """Insert records in the caller's transaction (SQLite: multi-row INSERTs; elsewhere one
    executemany, which the drivers batch: asyncpg pipelines it, aiomysql rewrites it into
    multi-row INSERTs)."""
    if not records:
        return
    if conn.dialect.name == "sqlite":
        await _insert_sqlite(conn, records)
        return
    sql, positional = _insert_sql(conn.dialect)
    # The statement is compiled once; the rows go straight to the driver's executemany
    # (no per-row work on the event loop: a batch of thousands would stall requests).
    params: Any = (list(records) if positional
                   else [dict(zip(FIELDS, r, strict=True)) for r in records])
    await conn.exec_driver_sql(sql, params)


async def set_mark(conn: AsyncConnection, spool: str, seq: int) -> None:
    """Store ``seq`` as the last record number written from ``spool`` (caller's transaction)."""
    now = time.time()
    updated = await conn.execute(m.update().where(m.c.spool == spool)
                                 .values(seq=seq, updated_at=now))
    if updated.rowcount == 0:
        await conn.execute(m.insert().values(spool=spool, seq=seq, updated_at=now))


class UsageSink:
    """The usage recorder's store, on its writer thread: a database engine of its own."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @classmethod
    async def open(cls, url: str) -> UsageSink:
        return cls(Database(url))

    async def write(self, records: Sequence[UsageRecord], spool: str | None, last: int) -> None:
        try:
            async with self.db.engine.begin() as conn:
                await insert_records(conn, records)
                if spool is not None:
                    await set_mark(conn, spool, last)
        except Exception:
            # Hold no connection while writes fail: on SQLite an open one keeps a read-only
            # WAL index read-only for every connection of the process (``Database._reopen``),
            # and elsewhere the next try gets a fresh one.
            await self.db.engine.dispose()
            raise

    async def last(self, spool: str) -> int:
        async with self.db.engine.connect() as conn:
            seq = (await conn.execute(sa.select(m.c.seq).where(m.c.spool == spool))).scalar()
        return int(seq or 0)

    async def forget(self, spool: str) -> None:
        async with self.db.engine.begin() as conn:
            await conn.execute(m.delete().where(m.c.spool == spool))

    async def close(self) -> None:
        await self.db.engine.dispose()


class UsageStore:
    """Writes usage records in batches and answers aggregate queries over them."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def insert_many(self, records: Sequence[UsageRecord]) -> None:
        """Insert records in one transaction (one executemany)."""
        if not records:
            return
        async with self.db.engine.begin() as conn:
            await insert_records(conn, records)

    def _bucket(self, seconds: int) -> sa.ColumnElement[Any]:
        # CAST rounds on PostgreSQL and MySQL, truncates on SQLite (which may lack floor()).
        if self.db.dialect == "sqlite":
            return sa.cast(t.c.created_at / seconds, sa.Integer) * seconds
        return sa.func.floor(t.c.created_at / seconds) * seconds

    async def aggregate(self, *, group_by: Sequence[GroupBy], bucket: str = "hour",
                        since: float | None = None, until: float | None = None,
                        key_id: str | None = None, model: str | None = None,
                        limit: int = 1000) -> list[UsageRow]:
        """Totals per group (any of key, model, time bucket, user, team), newest bucket
        first. A user or team group counts the requests of the keys that belong to that user
        or team now (null: keys of none)."""
        groups: list[sa.ColumnElement[Any]] = []
        source: sa.FromClause = t
        if "user" in group_by or "team" in group_by:
            source = t.outerjoin(api_keys, t.c.key_id == sa.cast(api_keys.c.id, sa.String(64)))
        if "user" in group_by:
            source = source.outerjoin(users, users.c.id == api_keys.c.user_id)
            groups += [api_keys.c.user_id.label("user_id"), users.c.name.label("user_name")]
        if "team" in group_by:
            source = source.outerjoin(teams, teams.c.id == api_keys.c.team_id)
            groups += [api_keys.c.team_id.label("team_id"), teams.c.name.label("team_name")]
        if "key" in group_by:
            groups.append(t.c.key_id.label("key_id"))
        if "model" in group_by:
            groups.append(t.c.model.label("model"))
        if "time" in group_by:
            groups.append(self._bucket(BUCKETS[bucket]).label("bucket_start"))
        errors = sa.func.sum(sa.case((t.c.status >= 400, 1), else_=0))
        query = sa.select(
            *groups,
            sa.func.count().label("requests"),
            errors.label("errors"),
            sa.func.coalesce(sa.func.sum(t.c.prompt_tokens), 0).label("prompt_tokens"),
            sa.func.coalesce(sa.func.sum(t.c.completion_tokens), 0).label("completion_tokens"),
            sa.func.coalesce(sa.func.sum(t.c.total_tokens), 0).label("total_tokens"),
            sa.func.avg(t.c.latency_ms).label("avg_latency_ms"),
            sa.func.max(t.c.latency_ms).label("max_latency_ms"),
            sa.func.avg(t.c.ttft_ms).label("avg_ttft_ms"),
            sa.func.coalesce(sa.func.sum(t.c.images), 0).label("images"),
            sa.func.coalesce(sa.func.sum(t.c.steps), 0).label("steps"),
            sa.func.coalesce(sa.func.sum(t.c.image_units), 0).label("image_units"),
            sa.func.coalesce(sa.func.sum(t.c.cost), 0).label("cost"),
        ).select_from(source)
        if since is not None:
            query = query.where(t.c.created_at >= since)
        if until is not None:
            query = query.where(t.c.created_at < until)
        if key_id is not None:
            query = query.where(t.c.key_id == key_id)
        if model is not None:
            query = query.where(t.c.model == model)
        if groups:
            query = query.group_by(*groups).order_by(*[sa.desc(g) if g.name == "bucket_start"
                                                       else g for g in groups])
        query = query.limit(limit)
        async with self.db.engine.connect() as conn:
            rows = await conn.execute(query)
            return [_clean({str(k): v for k, v in r._mapping.items()}) for r in rows]

    async def recent(self, *, limit: int = 100, key_id: str | None = None) -> list[UsageRow]:
        """The newest usage records as stored (their columns)."""
        query = sa.select(t).order_by(t.c.id.desc()).limit(limit)
        if key_id is not None:
            query = query.where(t.c.key_id == key_id)
        async with self.db.engine.connect() as conn:
            return [{str(k): v for k, v in r._mapping.items()}
                    for r in await conn.execute(query)]

    async def tokens_since(self, starts: dict[str, float]) -> dict[str, int]:
        """Total tokens per key id since each key's own start time (budget accounting)."""
        if not starts:
            return {}
        out: dict[str, int] = {}
        async with self.db.engine.connect() as conn:
            for key_id, start in starts.items():
                value = (await conn.execute(
                    sa.select(sa.func.coalesce(sa.func.sum(t.c.total_tokens), 0))
                    .where(t.c.key_id == key_id, t.c.created_at >= start))).scalar()
                out[key_id] = int(value or 0)
        return out

    async def level_tokens_since(self, kind: Literal["user", "team"], level_id: int,
                                 start: float) -> int:
        """Total tokens of every key of a user or team since ``start`` (their budget)."""
        column = api_keys.c.user_id if kind == "user" else api_keys.c.team_id
        ids = sa.select(sa.cast(api_keys.c.id, sa.String(64))).where(column == level_id)
        async with self.db.engine.connect() as conn:
            value = (await conn.execute(
                sa.select(sa.func.coalesce(sa.func.sum(t.c.total_tokens), 0))
                .where(t.c.key_id.in_(ids), t.c.created_at >= start))).scalar()
        return int(value or 0)

    async def cost_since(self, starts: dict[str, float]) -> dict[str, float]:
        """Total cost per key id since each key's own start time (money budgets)."""
        out: dict[str, float] = {}
        async with self.db.engine.connect() as conn:
            for key_id, start in starts.items():
                value = (await conn.execute(
                    sa.select(sa.func.coalesce(sa.func.sum(t.c.cost), 0))
                    .where(t.c.key_id == key_id, t.c.created_at >= start))).scalar()
                out[key_id] = float(value or 0)
        return out

    async def level_cost_since(self, kind: Literal["user", "team"], level_id: int,
                               start: float) -> float:
        """Total cost of every key of a user or team since ``start`` (their money budget)."""
        column = api_keys.c.user_id if kind == "user" else api_keys.c.team_id
        ids = sa.select(sa.cast(api_keys.c.id, sa.String(64))).where(column == level_id)
        async with self.db.engine.connect() as conn:
            value = (await conn.execute(
                sa.select(sa.func.coalesce(sa.func.sum(t.c.cost), 0))
                .where(t.c.key_id.in_(ids), t.c.created_at >= start))).scalar()
        return float(value or 0)

    async def budgeted_teams(self) -> list[tuple[int, str, float, str | None]]:
        """``(id, name, max_budget, budget_period)`` of every team with a money budget."""
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(
                sa.select(teams.c.id, teams.c.name, teams.c.max_budget, teams.c.budget_period)
                .where(teams.c.max_budget.is_not(None)).order_by(teams.c.id))).all()
        return [(int(r[0]), str(r[1]), float(r[2]), r[3]) for r in rows]

    async def team_costs_since(self, starts: dict[int, float]) -> dict[int, float]:
        """Total cost of every key of each team since the team's own start time (one grouped
        query per distinct start: teams share the start of their budget period)."""
        by_start: dict[float, list[int]] = {}
        for team_id, start in starts.items():
            by_start.setdefault(start, []).append(team_id)
        out = dict.fromkeys(starts, 0.0)
        async with self.db.engine.connect() as conn:
            for start, ids in by_start.items():
                rows = (await conn.execute(
                    sa.select(api_keys.c.team_id, sa.func.coalesce(sa.func.sum(t.c.cost), 0))
                    .select_from(t.join(api_keys, t.c.key_id
                                        == sa.cast(api_keys.c.id, sa.String(64))))
                    .where(api_keys.c.team_id.in_(ids), t.c.created_at >= start)
                    .group_by(api_keys.c.team_id))).all()
                for team_id, cost in rows:
                    out[int(team_id)] = float(cost or 0)
        return out

    async def image_units_since(self, starts: dict[str, float]) -> dict[str, int]:
        """Image cost units per key id since each key's own start time (image budgets)."""
        if not starts:
            return {}
        out: dict[str, int] = {}
        async with self.db.engine.connect() as conn:
            for key_id, start in starts.items():
                value = (await conn.execute(
                    sa.select(sa.func.coalesce(sa.func.sum(t.c.image_units), 0))
                    .where(t.c.key_id == key_id, t.c.created_at >= start))).scalar()
                out[key_id] = int(value or 0)
        return out

    async def count(self) -> int:
        async with self.db.engine.connect() as conn:
            return int((await conn.execute(sa.select(sa.func.count()).select_from(t)))
                       .scalar() or 0)


# Sums shown as they are (never rounded to the millisecond like latencies).
EXACT = frozenset({"cost"})


# A row of usage totals: the columns it is grouped by (text, ids, a bucket's start) and its
# sums and averages, as JSON numbers.
UsageRow = dict[str, str | int | float | None]


def _clean(row: Mapping[str, Any]) -> UsageRow:
    """Database numerics (Decimal on MySQL/PostgreSQL) to plain JSON numbers."""
    out: UsageRow = {}
    for name, value in row.items():
        if value is None or isinstance(value, str | int):
            out[name] = value
            continue
        number = float(value)
        if name in EXACT:
            out[name] = number
            continue
        out[name] = int(number) if name != "avg_latency_ms" and name != "avg_ttft_ms" \
            and name != "max_latency_ms" and number.is_integer() else round(number, 3)
    return out
