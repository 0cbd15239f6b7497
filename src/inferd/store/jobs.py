"""Job repository: every query on ``jobs``, ``job_events`` and ``webhook_attempts``.

State changes are single conditional ``UPDATE``s (claim, renew, finish, cancel) so that two
workers or a worker and a cancelling client can never both win: the ``rowcount`` says who did.
"""

from __future__ import annotations

import json
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, NamedTuple, TypedDict

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from inferd.errors import ErrorObject, JobCancelled
from inferd.jsontypes import JsonObject
from inferd.store.db import Database
from inferd.store.tables_control import usage_records as usage_table
from inferd.store.tables_jobs import job_events, jobs, webhook_attempts
from inferd.store.usage import insert_records
from inferd.usage import UsageRecord

TERMINAL = ("completed", "failed", "cancelled")


# The statements of the worker's hot path are built once, with their values as bound
# parameters: building one costs more than the round trip it saves when the group is small,
# and a statement object built once keeps its cache key (SQLAlchemy compiles it once per
# dialect). Parameter names differ from every column name (in an UPDATE, a parameter named
# after a column would set it).
def _claimable(now: Any) -> list[Any]:
    """A job ``claim`` may take: pending and due (``not_before``), or running with a lapsed
    lease (its process died: a crash) unless that crash is its last allowed one (it is then
    quarantined, see ``Finisher.unclaimable``); attempts left; not past its deadline."""
    return [sa.or_(sa.and_(jobs.c.status == "pending",
                           sa.or_(jobs.c.not_before.is_(None), jobs.c.not_before <= now)),
                   sa.and_(jobs.c.status == "running", jobs.c.lease_expires_at < now,
                           jobs.c.crashes + 1 < sa.bindparam(
                               "c_max_crashes", type_=jobs.c.crashes.type))),
            jobs.c.attempts < sa.bindparam("c_max_attempts", type_=jobs.c.attempts.type),
            sa.or_(jobs.c.deadline_at.is_(None), jobs.c.deadline_at > now)]


def _claimed(now: Any) -> list[tuple[Any, Any]]:
    """What a claim sets, in order: ``crashes`` first, as it reads the status before the claim
    (MySQL evaluates the assignments of an UPDATE from left to right)."""
    return [(jobs.c.crashes,
             jobs.c.crashes + sa.case((jobs.c.status == "running", 1), else_=0)),
            (jobs.c.status, "running"),
            (jobs.c.claimed_by, sa.bindparam("c_worker", type_=jobs.c.claimed_by.type)),
            (jobs.c.lease_expires_at,
             sa.bindparam("c_lease_end", type_=jobs.c.lease_expires_at.type)),
            (jobs.c.attempts, jobs.c.attempts + 1),
            (jobs.c.started_at, sa.func.coalesce(jobs.c.started_at, now))]


_NOW = sa.bindparam("c_now", type_=jobs.c.started_at.type)
_LAST_SEQ = (sa.select(sa.func.coalesce(sa.func.max(job_events.c.seq), 0))
             .where(job_events.c.job_id == jobs.c.id).correlate(jobs).scalar_subquery())
# ``claim_many`` on PostgreSQL and SQLite: the claimable jobs among ``c_ids``, claimed and
# returned with the last sequence number of their events; on MySQL one job (``c_id``).
_CLAIM = (sa.update(jobs)
          .where(jobs.c.id.in_(sa.bindparam("c_ids", expanding=True)), *_claimable(_NOW))
          .ordered_values(*_claimed(_NOW)).returning(*jobs.c, _LAST_SEQ.label("last_seq")))
_CLAIM_ONE = (sa.update(jobs).where(jobs.c.id == sa.bindparam("c_id"), *_claimable(_NOW))
              .ordered_values(*_claimed(_NOW)))
# ``finish_many``: lock the jobs still ours, then store each outcome (an executemany).
_OURS_NOW = [jobs.c.claimed_by == sa.bindparam("b_worker", type_=jobs.c.claimed_by.type),
             jobs.c.status == "running"]
_LOCK_OURS = (sa.select(jobs.c.id).where(jobs.c.id.in_(sa.bindparam("b_ids", expanding=True)),
                                         *_OURS_NOW).with_for_update())
_FINISH = (sa.update(jobs).where(jobs.c.id == sa.bindparam("b_id"), *_OURS_NOW)
           .values(status=sa.bindparam("b_status"),
                   result=sa.bindparam("b_result", type_=jobs.c.result.type),
                   error=sa.bindparam("b_error", type_=jobs.c.error.type),
                   status_code=sa.bindparam("b_status_code"),
                   usage=sa.bindparam("b_usage", type_=jobs.c.usage.type),
                   finished_at=sa.bindparam("b_finished_at"), lease_expires_at=None,
                   webhook_state=sa.case((jobs.c.webhook_url.is_not(None), "pending"),
                                         else_=None)))
_MARK_QUEUED = (sa.update(jobs)
                .where(jobs.c.id.in_(sa.bindparam("q_ids", expanding=True)),
                       jobs.c.status == "pending")
                .values(lease_expires_at=sa.bindparam("q_until",
                                                      type_=jobs.c.lease_expires_at.type)))
_INSERT_EVENTS = sa.insert(job_events)
# ``claim_many`` on PostgreSQL: the claim, and the first attempt's ``running`` event written by
# the same statement (a data-modifying CTE); the rows come back with that event's number.
# The data of a first attempt's ``running`` event (``EventLog.start`` writes the same).
FIRST_START_DATA = orjson.dumps({"status": "running", "attempt": 1}).decode()
_CLAIMED = _CLAIM.cte("claimed")
_STARTED = sa.insert(job_events).from_select(
    ["job_id", "seq", "kind", "data", "created_at"],
    sa.select(_CLAIMED.c.id, _CLAIMED.c.last_seq + 1, sa.literal_column("'status'"),
              sa.literal(FIRST_START_DATA), _NOW)
    .where(_CLAIMED.c.attempts == 1)).cte("started")
_CLAIM_STARTING = sa.select(_CLAIMED).add_cte(_STARTED)


class JobMeta(TypedDict, total=False):
    """What a job keeps beside its request (``jobs.meta``): the client's ``metadata``, the
    trace of the request that submitted it (``inferd.tracing.TRACEPARENT``), the context of a
    job submitted through the compatibility API."""

    traceparent: str
    context_id: int
    metadata: dict[str, str]


class WebhookAttempt(TypedDict):
    """One delivery attempt of a job's webhook (a row of ``webhook_attempts``), as the API
    shows it."""

    webhook_id: str
    attempt: int
    url: str
    status_code: int | None
    error: str | None
    created_at: float


class _EventRow(TypedDict):
    job_id: str
    seq: int
    kind: str
    data: str
    created_at: float


@dataclass
class JobRecord:
    """One row of ``jobs``: ``request`` is the body the job runs (before validation),
    ``result`` the answer's JSON, ``usage`` the answer's usage as JSON."""

    id: str
    endpoint: str
    model: str
    request: JsonObject
    request_hash: str
    owner: str | None = None
    owner_scope: str = "admin"
    source: str = "api"
    status: str = "pending"
    priority: int = 0
    idempotency_scope: str | None = None
    result: JsonObject | None = None
    error: ErrorObject | None = None
    status_code: int | None = None
    usage: JsonObject | None = None
    meta: JobMeta | None = None
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    deadline_at: float | None = None
    attempts: int = 0
    claimed_by: str | None = None
    lease_expires_at: float | None = None
    webhook_url: str | None = None
    webhook_state: str | None = None
    batch_id: str | None = None
    batch_index: int | None = None
    custom_id: str | None = None
    crashes: int = 0
    deferrals: int = 0
    not_before: float | None = None

    @property
    def on_probation(self) -> bool:
        """A run of this job ended with its process: it runs alone until it finishes."""
        return self.crashes > 0

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL

    def values(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class JobEvent:
    """One stored event of a job (``token``, ``status`` or ``reset``)."""

    seq: int
    kind: str
    data: str


@dataclass
class Outcome:
    """How a run of a job ended, as it will be stored."""

    status: str  # completed | failed | deferred (back to pending: the key's rate limit)
    result: JsonObject | None = None
    error: ErrorObject | None = None
    status_code: int | None = None
    usage: JsonObject | None = None


class Claimed(NamedTuple):
    """A job ``claim_many`` took: the job, the last sequence number of its events, and
    whether its ``running`` event was written with the claim (its first attempt, on
    PostgreSQL: ``last_seq`` is then that event's)."""

    job: JobRecord
    last_seq: int
    started: bool = False


class Finished(NamedTuple):
    """One outcome for ``finish_many``: the job, how its run ended, the run's usage records
    and the events it left to store with the outcome."""

    job_id: str
    outcome: Outcome
    records: Sequence[UsageRecord] = ()
    events: Sequence[JobEvent] = ()


def json_text(value: Any) -> str:
    """A JSON column's value as text, as SQLAlchemy's ``JSON`` binds it (``None`` is JSON
    ``null``)."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # what orjson refuses (integers beyond 64 bits, ...)
        return json.dumps(value)


def _append(columns: list[list[Any]], row: Sequence[Any]) -> None:
    """Add one row to per-column arrays."""
    for column, value in zip(columns, row, strict=True):
        column.append(value)


def pg_array(column: sa.Column[Any]) -> str:
    """The PostgreSQL array type that binds a column's values for ``unnest``. Strings go as
    unbounded ``VARCHAR``: an explicit cast to ``VARCHAR(n)`` would cut a longer value short,
    where the insert or update itself refuses it, as a bound value would be."""
    if isinstance(column.type, sa.String):
        return "VARCHAR[]"
    return f"{column.type.compile(dialect=postgresql.dialect())}[]"  # type: ignore[no-untyped-call]


def _pg_finish_sql() -> str:
    """``finish_many`` on PostgreSQL as one statement: the outcomes (arrays, one element per
    job) update the jobs still held, and the events and usage records of those jobs only are
    inserted, in data-modifying CTEs, which run once and commit with the statement."""
    fields = [usage_table.c[f] for f in UsageRecord._fields]
    usage_args = ", ".join(f"${14 + i}::{pg_array(c)}" for i, c in enumerate(fields))
    usage_cols = ", ".join(c.name for c in fields)
    return (
        "WITH v AS (SELECT * FROM unnest($1::VARCHAR[], $2::VARCHAR[], $3::TEXT[], $4::TEXT[], "
        "$5::INTEGER[], $6::TEXT[]) AS v(id, status, result, error, status_code, usage)), "
        "done AS (UPDATE jobs SET status = v.status, result = v.result::json, "
        "error = v.error::json, status_code = v.status_code, usage = v.usage::json, "
        "finished_at = $7, lease_expires_at = NULL, "
        "webhook_state = CASE WHEN jobs.webhook_url IS NOT NULL THEN 'pending' END "
        "FROM v WHERE jobs.id = v.id AND jobs.claimed_by = $8 AND jobs.status = 'running' "
        "RETURNING jobs.id), "
        "ev AS (INSERT INTO job_events (job_id, seq, kind, data, created_at) "
        "SELECT e.job_id, e.seq, e.kind, e.data, $7 FROM unnest($9::VARCHAR[], $10::INTEGER[], "
        "$11::VARCHAR[], $12::TEXT[]) AS e(job_id, seq, kind, data) "
        "WHERE e.job_id IN (SELECT id FROM done)), "
        f"us AS (INSERT INTO {usage_table.name} ({usage_cols}) SELECT {usage_cols} "
        f"FROM unnest($13::VARCHAR[], {usage_args}) AS u(job_id, {usage_cols}) "
        "WHERE u.job_id IN (SELECT id FROM done)) "
        "SELECT id FROM done")


_PG_FINISH = _pg_finish_sql()


def _record(row: sa.Row[Any]) -> JobRecord:
    return JobRecord(**dict(row._mapping))


@dataclass
class JobPage:
    """One page of a job listing."""

    jobs: list[JobRecord]
    has_more: bool


class JobStore:
    """All SQL on jobs."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- create / read ----------------------------------------------------------------------
    async def insert(self, job: JobRecord) -> tuple[JobRecord, bool]:
        """Insert ``job``; with a taken idempotency key return ``(existing, False)``."""
        try:
            async with self.db.statement() as conn:
                await conn.execute(sa.insert(jobs).values(**job.values()))
            return job, True
        except sa.exc.IntegrityError:
            if job.idempotency_scope is None:
                raise
            existing = await self.by_idempotency(job.idempotency_scope)
            if existing is None:
                raise
            return existing, False

    @staticmethod
    async def insert_many(conn: AsyncConnection, records: list[JobRecord]) -> None:
        """Insert many jobs inside the caller's transaction (a batch is all or nothing)."""
        for start in range(0, len(records), 500):
            await conn.execute(sa.insert(jobs), [r.values() for r in records[start:start + 500]])

    async def get(self, job_id: str) -> JobRecord | None:
        async with self.db.statement() as conn:
            row = (await conn.execute(sa.select(jobs).where(jobs.c.id == job_id))).first()
        return None if row is None else _record(row)

    async def by_idempotency(self, scope: str) -> JobRecord | None:
        async with self.db.statement() as conn:
            row = (await conn.execute(
                sa.select(jobs).where(jobs.c.idempotency_scope == scope))).first()
        return None if row is None else _record(row)

    async def page(self, *, owner: str | None, all_owners: bool, status: str | None = None,
                   model: str | None = None, source: str | None = None,
                   after: str | None = None, limit: int = 20,
                   private_source: str | None = None) -> JobPage:
        """Newest first; ``after`` is the id of the last job of the previous page.
        ``all_owners``: every owner's jobs, but of ``private_source`` only ``owner``'s."""
        query = sa.select(jobs).order_by(jobs.c.id.desc()).limit(limit + 1)
        own = jobs.c.owner.is_(None) if owner is None else jobs.c.owner == owner
        if not all_owners:
            query = query.where(own)
        elif private_source is not None:
            query = query.where(sa.or_(jobs.c.source != private_source, own))
        if status:
            query = query.where(jobs.c.status == status)
        if model:
            query = query.where(jobs.c.model == model)
        if source:
            query = query.where(jobs.c.source == source)
        if after:
            query = query.where(jobs.c.id < after)
        async with self.db.statement() as conn:
            rows = (await conn.execute(query)).all()
        return JobPage([_record(r) for r in rows[:limit]], has_more=len(rows) > limit)

    async def of_batch(self, batch_id: str) -> list[JobRecord]:
        async with self.db.statement() as conn:
            rows = (await conn.execute(sa.select(jobs).where(jobs.c.batch_id == batch_id)
                                       .order_by(jobs.c.batch_index))).all()
        return [_record(r) for r in rows]

    async def batch_counts(self, batch_id: str) -> dict[str, int]:
        query = (sa.select(jobs.c.status, sa.func.count()).where(jobs.c.batch_id == batch_id)
                 .group_by(jobs.c.status))
        async with self.db.statement() as conn:
            return {str(s): int(n) for s, n in (await conn.execute(query)).all()}

    # -- the worker's state changes ---------------------------------------------------------
    async def claim(self, job_id: str, worker: str, lease: float,
                    max_attempts: int, max_crashes: int = 2) -> JobRecord | None:
        """Take a pending job, or a running one whose lease expired; None if someone else has it."""
        claimed = (await self.claim_many([job_id], worker, lease, max_attempts,
                                         max_crashes=max_crashes))[0]
        return None if claimed is None else claimed[0]

    async def claim_many(self, job_ids: list[str], worker: str, lease: float,
                         max_attempts: int, *, start: bool = False,
                         max_crashes: int = 2) -> list[Claimed | None]:
        """``claim`` for many jobs in one statement: per id, the claimed job with the last
        sequence number of its events (its next attempt's events follow it), or None.

        PostgreSQL and SQLite return the claimed rows at once (``UPDATE ... RETURNING``: one
        round trip for the whole group; on PostgreSQL, with ``start``, the same statement
        writes each first attempt's ``running`` event); MySQL/MariaDB have no ``RETURNING``,
        so there each job is claimed, then read.
        """
        now = time.time()
        params: dict[str, float | str | list[str]] = {
            "c_now": now, "c_worker": worker, "c_lease_end": now + lease,
            "c_max_attempts": max_attempts, "c_max_crashes": max_crashes}
        found: dict[str, Claimed] = {}
        unique = list(dict.fromkeys(job_ids))
        if self.db.dialect in ("postgresql", "sqlite"):
            starting = start and self.db.dialect == "postgresql"
            async with self.db.statement() as conn:
                rows = (await conn.execute(_CLAIM_STARTING if starting else _CLAIM,
                                           {**params, "c_ids": unique})).all()
            for row in rows:
                data = dict(row._mapping)
                seq = int(data.pop("last_seq") or 0)
                claimed = JobRecord(**data)
                started = starting and claimed.attempts == 1
                found[claimed.id] = Claimed(claimed, seq + 1 if started else seq, started)
        else:
            for job_id in unique:
                async with self.db.statement() as conn:
                    result = await conn.execute(_CLAIM_ONE, {**params, "c_id": job_id})
                if result.rowcount == 1:
                    job = await self.get(job_id)
                    if job is not None:
                        found[job_id] = Claimed(job, await self.last_seq(job_id))
        # an id twice in one group (a redelivered message) is claimed by its first caller only
        return [found.pop(job_id, None) for job_id in job_ids]

    async def renew(self, job_id: str, worker: str, lease: float) -> bool:
        """Extend the lease; False when the job is no longer ours (cancelled or taken over)."""
        async with self.db.statement() as conn:
            result = await conn.execute(
                sa.update(jobs).where(jobs.c.id == job_id, jobs.c.claimed_by == worker,
                                      jobs.c.status == "running")
                .values(lease_expires_at=time.time() + lease))
        return bool(result.rowcount == 1)

    async def finish(self, job_id: str, worker: str | None, status: str, *,
                     result: JsonObject | None = None, error: ErrorObject | None = None,
                     status_code: int | None = None, usage: JsonObject | None = None,
                     from_status: tuple[str, ...] = ("running",),
                     usage_records: Sequence[UsageRecord] = ()) -> bool:
        """Store the outcome once: only the worker holding the job (or, for ``worker=None``,
        whoever moves it out of ``from_status``) succeeds. ``usage_records`` (the run's
        metering) are committed in the same transaction, and only with a stored outcome."""
        condition = [jobs.c.id == job_id, jobs.c.status.in_(from_status)]
        if worker is not None:
            condition.append(jobs.c.claimed_by == worker)
        webhook_state = sa.case((jobs.c.webhook_url.is_not(None), "pending"), else_=None)
        # With usage records: one transaction for both statements (not autocommit).
        async with (self.db.engine.begin() if usage_records else self.db.statement()) as conn:
            updated = await conn.execute(
                sa.update(jobs).where(*condition)
                .values(status=status, result=result, error=error, status_code=status_code,
                        usage=usage, finished_at=time.time(), lease_expires_at=None,
                        webhook_state=webhook_state))
            stored = bool(updated.rowcount == 1)
            if stored:
                await insert_records(conn, usage_records)
        return stored

    async def finish_many(self, worker: str, outcomes: list[Finished]) -> list[bool]:
        """Store the outcomes of jobs ``worker`` holds, with the events their runs left and
        their usage records, atomically: per outcome, True when it was stored (False: the job
        was cancelled or taken over meanwhile; its events and records are not stored). A
        stored result is always billed. A job twice in the group is stored once (its first).

        PostgreSQL: one statement for the whole group (``_PG_FINISH``). Elsewhere, one
        transaction: the jobs still ours are locked (``SELECT ... FOR UPDATE``), then updated
        with one ``executemany``, their events and records inserted.
        """
        if self.db.dialect == "postgresql":
            return await self._finish_many_pg(worker, outcomes)
        ids = list(dict.fromkeys(item.job_id for item in outcomes))
        async with self.db.engine.begin() as conn:
            ours = {str(i) for i in (await conn.execute(
                _LOCK_OURS, {"b_ids": ids, "b_worker": worker})).scalars()}
            stored, rows, now = [], [], time.time()
            billed: list[UsageRecord] = []
            events: list[_EventRow] = []
            for job_id, outcome, records, left in outcomes:
                mine = job_id in ours
                ours.discard(job_id)  # once per job, whatever the group holds
                stored.append(mine)
                if mine:
                    rows.append({"b_id": job_id, "b_worker": worker, "b_status": outcome.status,
                                 "b_result": outcome.result, "b_error": outcome.error,
                                 "b_status_code": outcome.status_code,
                                 "b_usage": outcome.usage, "b_finished_at": now})
                    billed.extend(records)
                    events.extend({"job_id": job_id, "seq": e.seq, "kind": e.kind,
                                   "data": e.data, "created_at": now} for e in left)
            if rows:
                await conn.execute(_FINISH, rows)
            if events:
                await conn.execute(_INSERT_EVENTS, events)
            await insert_records(conn, billed)
        return stored

    async def _finish_many_pg(self, worker: str, outcomes: list[Finished]) -> list[bool]:
        first: dict[str, Finished] = {}
        for item in outcomes:
            first.setdefault(item.job_id, item)
        per_job: list[list[Any]] = [[] for _ in range(6)]  # $1..$6
        per_event: list[list[Any]] = [[] for _ in range(4)]  # $9..$12
        per_record: list[list[Any]] = [[] for _ in range(1 + len(UsageRecord._fields))]
        for job_id, outcome, records, left in first.values():
            _append(per_job, (job_id, outcome.status, json_text(outcome.result),
                              json_text(outcome.error), outcome.status_code,
                              json_text(outcome.usage)))
            for event in left:
                _append(per_event, (job_id, event.seq, event.kind, event.data))
            for record in records:
                _append(per_record, (job_id, *record))
        params = (*per_job, time.time(), worker, *per_event, *per_record)
        async with self.db.statement() as conn:
            done = {str(i) for i in (await conn.exec_driver_sql(_PG_FINISH, params)).scalars()}
        return [item.job_id in done and first[item.job_id] is item for item in outcomes]

    async def mark_queued(self, job_ids: list[str], until: float | None) -> list[None]:
        """A durable queue (the broker) confirmed these pending jobs' ids: sweeps leave them
        alone until ``until`` instead of publishing them again (which, with a deep queue,
        would fill it with copies). A job handed back (``release``) is unmarked, and so is
        one stored marked whose publish failed (``until`` None): the next sweep publishes it."""
        async with self.db.statement() as conn:
            await conn.execute(_MARK_QUEUED, {"q_ids": job_ids, "q_until": until})
        return [None] * len(job_ids)

    async def release(self, job_id: str, worker: str, *,
                      not_before: float | None = None) -> None:
        """Hand a job back on shutdown: pending again, and this attempt does not count.
        ``not_before``: a deferral (its key's rate limit): no claim or sweep takes the job
        before that time, and its deferrals are counted (the next one waits longer)."""
        update = (sa.update(jobs).where(jobs.c.id == job_id, jobs.c.claimed_by == worker,
                                        jobs.c.status == "running")
                  .values(status="pending", claimed_by=None, lease_expires_at=None,
                          attempts=jobs.c.attempts - 1))
        if not_before is not None:
            update = update.values(not_before=not_before, deferrals=jobs.c.deferrals + 1)
        async with self.db.statement() as conn:
            await conn.execute(update)

    async def count_unfinished(self, owner: str | None, *, batch: bool) -> int:
        """How many jobs of ``owner`` are pending or running: its batches' lines (``batch``),
        or its other jobs."""
        source = jobs.c.source == "batch"
        query = (sa.select(sa.func.count()).select_from(jobs)
                 .where(jobs.c.owner.is_(None) if owner is None else jobs.c.owner == owner,
                        jobs.c.status.in_(("pending", "running")),
                        source if batch else sa.not_(source)))
        async with self.db.statement() as conn:
            return int((await conn.execute(query)).scalar() or 0)

    async def recoverable(self, models: Collection[str] | None = None) -> list[JobRecord]:
        """Jobs to (re-)enqueue: pending ones not known to be queued and running ones whose
        lease expired; only of ``models`` when given."""
        now = time.time()
        # A pending job's lease is the broker's (``mark_queued``): its id is queued until then.
        lapsed = sa.or_(jobs.c.lease_expires_at.is_(None), jobs.c.lease_expires_at < now)
        due = sa.or_(jobs.c.not_before.is_(None), jobs.c.not_before <= now)  # deferred: later
        query = (sa.select(jobs).where(sa.or_(
            sa.and_(jobs.c.status == "pending", lapsed, due),
            sa.and_(jobs.c.status == "running", jobs.c.lease_expires_at < now)))
            .order_by(jobs.c.priority.desc(), jobs.c.id))
        if models is not None:
            if not models:
                return []
            query = query.where(jobs.c.model.in_(sorted(models)))
        async with self.db.statement() as conn:
            return [_record(r) for r in (await conn.execute(query)).all()]

    async def pending_by_model(self) -> dict[str, tuple[int, float]]:
        """The pending jobs of each model that has some: how many, and when the oldest of
        them was created (the job-queue metrics; ``ix_jobs_status_model`` finds them)."""
        query = (sa.select(jobs.c.model, sa.func.count(), sa.func.min(jobs.c.created_at))
                 .where(jobs.c.status == "pending").group_by(jobs.c.model))
        async with self.db.statement() as conn:
            rows = (await conn.execute(query)).all()
        return {str(model): (int(count), float(oldest)) for model, count, oldest in rows}

    async def overdue(self) -> list[str]:
        """Ids of pending jobs past their deadline."""
        query = sa.select(jobs.c.id).where(jobs.c.status == "pending",
                                           jobs.c.deadline_at < time.time())
        async with self.db.statement() as conn:
            return [str(r[0]) for r in (await conn.execute(query)).all()]

    async def cancel_batch_pending(self, batch_id: str) -> int:
        async with self.db.statement() as conn:
            result = await conn.execute(
                sa.update(jobs).where(jobs.c.batch_id == batch_id, jobs.c.status == "pending")
                .values(status="cancelled", finished_at=time.time(),
                        error=JobCancelled("The batch was cancelled.",
                                           code="batch_cancelled").to_dict()))
        return int(result.rowcount)

    async def delete(self, job_id: str) -> bool:
        async with self.db.engine.begin() as conn:
            deleted = await conn.execute(sa.delete(jobs).where(jobs.c.id == job_id))
            await conn.execute(sa.delete(job_events).where(job_events.c.job_id == job_id))
            await conn.execute(sa.delete(webhook_attempts)
                               .where(webhook_attempts.c.job_id == job_id))
        return bool(deleted.rowcount == 1)

    async def purge_finished(self, before: float) -> int:
        """Delete finished jobs (and their events) older than ``before``; batch jobs go with
        their batch."""
        query = sa.select(jobs.c.id).where(jobs.c.status.in_(TERMINAL),
                                           jobs.c.finished_at < before,
                                           jobs.c.batch_id.is_(None)).limit(1000)
        total = 0
        while True:
            async with self.db.engine.connect() as conn:
                ids = [str(r[0]) for r in (await conn.execute(query)).all()]
            if not ids:
                return total
            await self.delete_many(ids)
            total += len(ids)

    async def delete_many(self, ids: list[str]) -> None:
        async with self.db.engine.begin() as conn:
            await conn.execute(sa.delete(job_events).where(job_events.c.job_id.in_(ids)))
            await conn.execute(sa.delete(webhook_attempts)
                               .where(webhook_attempts.c.job_id.in_(ids)))
            await conn.execute(sa.delete(jobs).where(jobs.c.id.in_(ids)))

    # -- events -----------------------------------------------------------------------------
    async def last_seq(self, job_id: str) -> int:
        async with self.db.statement() as conn:
            value = (await conn.execute(sa.select(sa.func.max(job_events.c.seq))
                                        .where(job_events.c.job_id == job_id))).scalar()
        return int(value or 0)

    async def add_events(self, job_id: str, events: list[JobEvent],
                         *, replace_before: int | None = None) -> None:
        """Append events; ``replace_before`` first drops older ones (a new attempt's reset)."""
        now = time.time()
        async with self.db.engine.begin() as conn:
            if replace_before is not None:
                await conn.execute(sa.delete(job_events).where(
                    job_events.c.job_id == job_id, job_events.c.seq < replace_before))
            await conn.execute(sa.insert(job_events), [
                {"job_id": job_id, "seq": e.seq, "kind": e.kind, "data": e.data,
                 "created_at": now} for e in events])

    async def add_events_many(self, batches: list[tuple[str, list[JobEvent]]]) -> list[None]:
        """Append the events of several jobs in one multi-row ``INSERT``."""
        now = time.time()
        rows = [{"job_id": job_id, "seq": e.seq, "kind": e.kind, "data": e.data,
                 "created_at": now} for job_id, events in batches for e in events]
        if rows:
            async with self.db.statement() as conn:
                await conn.execute(_INSERT_EVENTS, rows)
        return [None] * len(batches)

    async def events_after(self, job_id: str, seq: int) -> list[JobEvent]:
        query = (sa.select(job_events.c.seq, job_events.c.kind, job_events.c.data)
                 .where(job_events.c.job_id == job_id, job_events.c.seq > seq)
                 .order_by(job_events.c.seq))
        async with self.db.statement() as conn:
            return [JobEvent(int(s), str(k), str(d)) for s, k, d in (await conn.execute(query))]

    # -- webhooks ---------------------------------------------------------------------------
    async def record_attempt(self, job_id: str, webhook_id: str, attempt: int, url: str,
                             status_code: int | None, error: str | None) -> None:
        async with self.db.statement() as conn:
            await conn.execute(sa.insert(webhook_attempts).values(
                job_id=job_id, webhook_id=webhook_id, attempt=attempt, url=url,
                status_code=status_code, error=error, created_at=time.time()))

    async def attempts(self, job_id: str) -> list[WebhookAttempt]:
        query = (sa.select(webhook_attempts).where(webhook_attempts.c.job_id == job_id)
                 .order_by(webhook_attempts.c.id))
        async with self.db.statement() as conn:
            rows = (await conn.execute(query)).all()
        return [WebhookAttempt(webhook_id=str(r.webhook_id), attempt=int(r.attempt),
                               url=str(r.url), status_code=r.status_code, error=r.error,
                               created_at=float(r.created_at)) for r in rows]

    async def set_webhook_state(self, job_id: str, state: str) -> None:
        async with self.db.statement() as conn:
            await conn.execute(sa.update(jobs).where(jobs.c.id == job_id)
                               .values(webhook_state=state))

    async def pending_webhooks(self) -> list[JobRecord]:
        async with self.db.statement() as conn:
            rows = (await conn.execute(sa.select(jobs).where(jobs.c.webhook_state == "pending")
                                       .order_by(jobs.c.id))).all()
        return [_record(r) for r in rows]
