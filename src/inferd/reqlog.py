"""The request log: one record per request an operator can search.

``Metering.finish`` hands every finished request (sync, streamed, a job's, a batch line's, a
background response's) to ``RequestLog.record``: one ``RequestRecord`` appended to a queue, no
I/O, no await. A writer thread of its own spools the records (``<data_dir>/spool/requests``)
and writes them in batches (``inferd.batchwriter``, as the usage recorder does): memory is
bounded (``request_log_max_pending``), a clean stop writes what is left, a killed process's
spool is replayed at the next start.

Stored per request: its time, request id, key (id and name) and the key's user and team (ids,
as they were when the request was made), model, replica, endpoint,
whether it streamed, status and error code, latency, time to first token, tokens in and out,
cached prompt tokens, cost, replicas tried, the client's address and user agent, and the trace
id (of the request's span when the process traces, else of an incoming W3C ``traceparent``
header). The request's and the answer's bodies only for a key with ``log_bodies``
(``inferd.request_bodies``: capped and redacted, a stream assembled).

Reading pages newest first by cursor (``page``); the maintenance sweep creates the partitions
of the next days ahead and removes what is past the retention (``maintain``).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypedDict

from inferd.batchwriter import SpooledWriter
from inferd.request_bodies import Redact, assemble, body_text
from inferd.settings import RequestLogSettings, UsageSettings
from inferd.store.db import Database, unreachable
from inferd.store.request_log import (
    DAY,
    Cursor,
    RequestLogSink,
    RequestLogStore,
    RequestQuery,
    RequestRecord,
    day_start,
)

__all__ = ["AHEAD_DAYS", "RequestLog", "RequestQuery", "RequestRecord", "parse_cursor",
           "request_view", "status_range", "trace_id"]

# Partitions created ahead of today by the maintenance sweep (PostgreSQL).
AHEAD_DAYS = 2
MAX_USER_AGENT = 256
DASH = ord("-")
_HEX = b"0123456789abcdefABCDEF"
_NO_TRACE = b"0" * 32
_STATUS = re.compile(r"(?:[1-5][0-9][0-9]|[1-5]xx|error)\Z")


def trace_id(value: bytes) -> str | None:
    """The trace id of a W3C ``traceparent`` header's value (None: malformed, or all zeros).
    Checked with slices and one ``bytes.translate`` (a C loop): this runs on every request."""
    if len(value) != 55:  # a later version's fields follow a dash; spaces around are allowed
        value = value.strip()
        if len(value) < 55 or (len(value) > 55 and value[55] != DASH):
            return None
        value = value[:55]
    if (value[2] != DASH or value[35] != DASH or value[52] != DASH
            or value.translate(None, _HEX) != b"---"):
        return None
    trace = value[3:35].lower()
    if value[:2] in (b"ff", b"FF") or trace == _NO_TRACE:
        return None
    return trace.decode()


def client_of(scope: Mapping[str, Any] | None) -> tuple[str | None, str | None, str | None]:
    """The client address, user agent and trace id of a request's ASGI scope."""
    if scope is None:
        return None, None, None
    client = scope.get("client")
    agent = trace = None
    for name, value in scope.get("headers", ()):
        if name == b"user-agent":
            agent = value[:MAX_USER_AGENT].decode("latin-1")
        elif name == b"traceparent":
            trace = trace_id(value)
    return (str(client[0])[:64] if client else None), agent, trace


class RequestView(TypedDict):
    """A stored request as the API, the CLI and the UI show it."""

    id: str
    object: str
    created_at: float
    request_id: str | None
    key_id: str | None
    key_name: str | None
    user_id: int | None
    team_id: int | None
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
    total_tokens: int
    cached_tokens: int | None
    cost: float
    attempts: int
    client_address: str | None
    user_agent: str | None
    trace_id: str | None
    request_body: str | None
    response_body: str | None


class RequestPage(TypedDict):
    """A page of stored requests, newest first."""

    object: str
    data: list[RequestView]
    has_more: bool
    next_cursor: str | None


def request_view(row: Mapping[str, Any]) -> RequestView:
    """A stored request as the API, the CLI and the UI show it."""
    ttft = row["ttft_ms"]
    return {
        "id": str(row["id"]),
        "object": "request",
        "created_at": row["created_at"],
        "request_id": row["request_id"],
        "key_id": row["key_id"],
        "key_name": row["key_name"],
        "user_id": row.get("user_id"),
        "team_id": row.get("team_id"),
        "model": row["model"],
        "replica": row["replica"],
        "endpoint": row["endpoint"],
        "stream": bool(row["stream"]),
        "status": row["status"],
        "error": row["error"],
        "latency_ms": round(float(row["latency_ms"]), 3),
        "ttft_ms": None if ttft is None else round(float(ttft), 3),
        "prompt_tokens": row["prompt_tokens"],
        "completion_tokens": row["completion_tokens"],
        "total_tokens": row["prompt_tokens"] + row["completion_tokens"],
        "cached_tokens": row["cached_tokens"],
        "cost": float(row["cost"]),
        "attempts": row["attempts"],
        "client_address": row["client_address"],
        "user_agent": row["user_agent"],
        "trace_id": row["trace_id"],
        "request_body": row.get("request_body"),
        "response_body": row.get("response_body"),
    }


def cursor_text(row: Mapping[str, Any]) -> str:
    return f"{float(row['created_at'])!r}:{int(row['id'])}"


def parse_cursor(text: str) -> Cursor | None:
    """A page's cursor (``next_cursor`` of the previous page); None when malformed."""
    when, sep, ident = text.partition(":")
    if not sep:
        return None
    try:
        created, row_id = float(when), int(ident)
    except ValueError:
        return None
    if not math.isfinite(created) or row_id < 0 or row_id >= 2**63:
        return None
    return created, row_id


def status_range(status: str) -> tuple[int | None, int | None] | None:
    """The statuses a status filter keeps, [from, to): ``429``, a class (``5xx``) or
    ``error`` (every status from 400); None when it is none of those."""
    if not _STATUS.match(status):
        return None
    if status == "error":
        return 400, None
    if status.endswith("xx"):
        low = int(status[0]) * 100
        return low, low + 100
    return int(status), int(status) + 1


def _decode(fields: list[Any]) -> RequestRecord:
    return RequestRecord(*fields)


class RequestLog:
    """Records requests off the request path and reads them back."""

    def __init__(self, store: RequestLogStore | None,
                 writer: SpooledWriter[RequestRecord] | None, *,
                 retention_days: float = 30.0, redact: Redact = "mask",
                 body_bytes: int = 65536) -> None:
        """``writer`` None: nothing is recorded (the log is off); what is stored can still
        be read and is still pruned. ``redact`` and ``body_bytes``: how the bodies of a key
        with ``log_bodies`` are kept."""
        self.store = store
        self.writer = writer
        self.enabled = writer is not None
        self.retention_days = retention_days
        self.redact: Redact = redact
        self.body_bytes = body_bytes

    def bodies(self, request: Any, response: Any) -> tuple[str | None, str | None]:
        """The request's and the answer's bodies as kept (a list: the chunks of a stream,
        assembled here)."""
        if isinstance(response, list):
            response = assemble(response)
        return (body_text(request, self.redact, self.body_bytes),
                body_text(response, self.redact, self.body_bytes))

    @classmethod
    async def start(cls, settings: RequestLogSettings, usage: UsageSettings, db: Database,
                    data_dir: Path) -> RequestLog:
        """The log of ``settings`` on ``db``, its writer started when the log is on (batched
        and spooled under ``data_dir`` as ``usage`` says usage records are)."""
        store = RequestLogStore(db)
        writer = None
        if settings.request_log:
            url = db.url
            writer = SpooledWriter(
                lambda: RequestLogSink.open(url), decode=_decode,
                directory=data_dir / "spool" / "requests" if usage.usage_spool else None,
                name="requests", flush_seconds=usage.usage_flush_seconds,
                max_pending=settings.request_log_max_pending,
                sync_seconds=usage.usage_spool_sync_seconds, transient=unreachable)
            await writer.start()
        return cls(store, writer, retention_days=settings.request_log_retention_days,
                   redact=settings.request_log_redact, body_bytes=settings.request_log_body_bytes)

    def record(self, record: RequestRecord) -> None:
        """Accept one request's record (no I/O: the writer thread stores it)."""
        writer = self.writer
        if writer is not None:
            writer.record(record)

    async def flush(self) -> None:
        """Return once every record accepted so far is stored (or a write failed)."""
        if self.writer is not None:
            await self.writer.flush()

    async def close(self) -> None:
        if self.writer is not None:
            await self.writer.close()

    @property
    def spool_path(self) -> Path | None:
        return self.writer.spool_path if self.writer is not None else None

    async def page(self, query: RequestQuery, *, cursor: Cursor | None = None,
                   limit: int = 50) -> RequestPage:
        """A page of requests, newest first, with ``has_more`` and ``next_cursor``."""
        if self.store is None:
            return {"object": "list", "data": [], "has_more": False, "next_cursor": None}
        rows, more = await self.store.page(query, after=cursor, limit=limit)
        return {"object": "list", "data": [request_view(r) for r in rows], "has_more": more,
                "next_cursor": cursor_text(rows[-1]) if more and rows else None}

    async def maintain(self, now: float | None = None) -> int:
        """Create the partitions of today and the next ``AHEAD_DAYS`` days (PostgreSQL) and
        remove what is past the retention (none when it is 0: kept for ever); how many rows
        (SQLite, MariaDB) or partitions (PostgreSQL) were removed."""
        if self.store is None:
            return 0
        now = now or time.time()
        if self.enabled:
            today = day_start(now)
            await self.store.ensure_partitions(today + i * DAY for i in range(AHEAD_DAYS + 1))
        if self.retention_days <= 0:
            return 0
        return await self.store.prune(now - self.retention_days * DAY)
