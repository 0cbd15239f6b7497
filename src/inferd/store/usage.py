"""Repository for usage records (the ``metrics`` table): batch inserts and aggregates."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from inferd.store.db import Database
from inferd.store.tables_control import usage_records as t
from inferd.usage import UsageRecord

GroupBy = Literal["key", "model", "time"]
BUCKETS = {"minute": 60, "hour": 3600, "day": 86400}

# The columns ``insert_many`` writes, in the order of a record's fields.
FIELDS = UsageRecord._fields


# The compiled multi-row insert per dialect: (SQL, whether its parameters are positional).
_INSERTS: dict[str, tuple[str, bool]] = {}


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


async def insert_records(conn: AsyncConnection, records: Sequence[UsageRecord]) -> None:
    """Insert records in the caller's transaction (one executemany)."""
    if not records:
        return
    sql, positional = _insert_sql(conn.dialect)
    # The statement is compiled once; the rows go straight to the driver's executemany
    # (no per-row work on the event loop: a batch of thousands would stall requests).
    params: Any = (list(records) if positional
                   else [dict(zip(FIELDS, r, strict=True)) for r in records])
    await conn.exec_driver_sql(sql, params)


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
                        limit: int = 1000) -> list[dict[str, Any]]:
        """Totals per group (any of key, model, time bucket), newest bucket first."""
        groups: list[sa.ColumnElement[Any]] = []
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
        )
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

    async def recent(self, *, limit: int = 100, key_id: str | None = None) -> list[dict[str, Any]]:
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


def _clean(row: dict[str, Any]) -> dict[str, Any]:
    """Database numerics (Decimal on MySQL/PostgreSQL) to plain JSON numbers."""
    for name, value in row.items():
        if value is None or isinstance(value, str | int):
            continue
        number = float(value)
        row[name] = int(number) if name != "avg_latency_ms" and name != "avg_ttft_ms" \
            and name != "max_latency_ms" and number.is_integer() else round(number, 3)
    return row
