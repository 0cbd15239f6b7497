"""Usage as a time series per model or key, with latency and TTFT percentiles.

Requests the client broke off (status 499: a closed connection, a cancelled job) are counted
as ``cancelled``, apart from ``errors`` (4xx and 5xx answers). Series per key are named by the
key's name (the id when the key is gone or has no name; a name two keys share gets its id).

Percentiles have no portable SQL form across SQLite, PostgreSQL and MariaDB, so the query
reads the few columns a chart needs for the range asked (bounded by ``MAX_ROWS``) and the
buckets are summed here. A week of a busy server is still a few hundred thousand narrow rows.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Literal, TypedDict

import sqlalchemy as sa

from inferd.store.db import Database
from inferd.store.tables_control import api_keys
from inferd.store.tables_control import usage_records as t

SplitBy = Literal["model", "key", "none"]
MAX_ROWS = 500_000
MAX_BUCKETS = 2000
# The status of a request whose client went away before its answer (``inferd.metering``).
CANCELLED = 499


def percentile(values: list[float], q: float) -> float | None:
    """The nearest-rank percentile ``q`` (0..100) of ``values`` (sorted here)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return round(ordered[rank - 1], 3)


class BucketView(TypedDict):
    """One time bucket of a usage series, as the API shows it."""

    bucket_start: float
    requests: int
    errors: int
    cancelled: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    images: int
    steps: int
    p50_latency_ms: float | None
    p95_latency_ms: float | None
    p50_ttft_ms: float | None
    p95_ttft_ms: float | None


# Series name -> its buckets, oldest first.
Series = dict[str, list[BucketView]]


class _Bucket:
    __slots__ = ("cancelled", "completion", "errors", "images", "latency", "prompt", "requests",
                 "steps", "ttft")

    def __init__(self) -> None:
        self.requests = self.errors = self.cancelled = self.prompt = self.completion = 0
        self.images = self.steps = 0
        self.latency: list[float] = []
        self.ttft: list[float] = []

    def add(self, status: int, prompt: int, completion: int, latency: float,
            ttft: float | None, images: int, steps: int) -> None:
        self.requests += 1
        self.images += images
        self.steps += steps
        if status == CANCELLED:
            self.cancelled += 1
        elif status >= 400:
            self.errors += 1
        self.prompt += prompt
        self.completion += completion
        self.latency.append(latency)
        if ttft is not None:
            self.ttft.append(ttft)

    def view(self, start: float) -> BucketView:
        return {"bucket_start": start, "requests": self.requests, "errors": self.errors,
                "cancelled": self.cancelled,
                "prompt_tokens": self.prompt, "completion_tokens": self.completion,
                "total_tokens": self.prompt + self.completion, "images": self.images,
                "steps": self.steps,
                "p50_latency_ms": percentile(self.latency, 50),
                "p95_latency_ms": percentile(self.latency, 95),
                "p50_ttft_ms": percentile(self.ttft, 50),
                "p95_ttft_ms": percentile(self.ttft, 95)}


class UsageSeries:
    """Reads usage records into per-bucket series."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def series(self, *, bucket: int, since: float, until: float,
                     split_by: SplitBy = "model", model: str | None = None,
                     key_id: str | None = None) -> Series:
        """``{series name: [bucket, ...]}``; every series has every bucket of the range
        (empty buckets are zeros) so charts line up."""
        query = sa.select(t.c.created_at, t.c.model, t.c.key_id, t.c.status,
                          t.c.prompt_tokens, t.c.completion_tokens, t.c.latency_ms,
                          t.c.ttft_ms, t.c.images, t.c.steps
                          ).where(t.c.created_at >= since, t.c.created_at < until)
        if model is not None:
            query = query.where(t.c.model == model)
        if key_id is not None:
            query = query.where(t.c.key_id == key_id)
        query = query.order_by(t.c.created_at.desc()).limit(MAX_ROWS)
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
            series = _fold(rows, bucket=bucket, since=since, until=until, split_by=split_by)
            if split_by != "key" or not series:
                return series
            ids = [k for k in series if k != NO_KEY]
            found = (await conn.execute(
                sa.select(api_keys.c.id, api_keys.c.name).where(
                    api_keys.c.id.in_([int(k) for k in ids if k.isdigit()])))).all()
        return _named(series, {str(i): n for i, n in found if n})


NO_KEY = "(no key)"


def _named(series: Series, names: dict[str, str]) -> Series:
    """The series per key id renamed by the keys' names, in the names' order."""
    shared = {n for n in names.values() if list(names.values()).count(n) > 1}
    def label(key_id: str) -> str:
        name = names.get(key_id)
        if key_id == NO_KEY:
            return key_id
        if not name:
            return f"key {key_id}"
        return f"{name} (key {key_id})" if name in shared else name
    return dict(sorted((label(k), v) for k, v in series.items()))


def _fold(rows: Iterable[Any], *, bucket: int, since: float, until: float,
          split_by: SplitBy) -> Series:
    first = math.floor(since / bucket) * bucket
    starts = [float(first + i * bucket) for i in range(math.ceil((until - first) / bucket))]
    groups: dict[str, dict[float, _Bucket]] = {}
    for created, model, key_id, status, prompt, completion, latency, ttft, images, steps in rows:
        name = model if split_by == "model" else "all" if split_by == "none" \
            else str(key_id or NO_KEY)
        start = float(created // bucket * bucket)
        buckets = groups.setdefault(name, {})
        buckets.setdefault(start, _Bucket()).add(int(status), int(prompt), int(completion),
                                                 float(latency),
                                                 None if ttft is None else float(ttft),
                                                 int(images or 0), int(steps or 0))
    return {name: [buckets.get(s, _Bucket()).view(s) for s in starts]
            for name, buckets in sorted(groups.items())}
