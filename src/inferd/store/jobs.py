"""Job repository: every query on ``jobs``, ``job_events`` and ``webhook_attempts``.

State changes are single conditional ``UPDATE``s (claim, renew, finish, cancel) so that two
workers or a worker and a cancelling client can never both win: the ``rowcount`` says who did.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Collection
from dataclasses import dataclass, field, fields
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from inferd.store.db import Database
from inferd.store.tables_jobs import job_events, jobs, webhook_attempts

TERMINAL = ("completed", "failed", "cancelled")


def new_id(prefix: str) -> str:
    """A time-ordered id: sorting ids sorts by creation time."""
    return f"{prefix}_{time.time_ns():016x}{secrets.token_hex(4)}"


@dataclass
class JobRecord:
    """One row of ``jobs``."""

    id: str
    endpoint: str
    model: str
    request: dict[str, Any]
    request_hash: str
    owner: str | None = None
    owner_scope: str = "admin"
    source: str = "api"
    status: str = "pending"
    priority: int = 0
    idempotency_scope: str | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    status_code: int | None = None
    usage: dict[str, Any] | None = None
    meta: dict[str, Any] | None = None
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
            async with self.db.engine.begin() as conn:
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
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(sa.select(jobs).where(jobs.c.id == job_id))).first()
        return None if row is None else _record(row)

    async def by_idempotency(self, scope: str) -> JobRecord | None:
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(
                sa.select(jobs).where(jobs.c.idempotency_scope == scope))).first()
        return None if row is None else _record(row)

    async def page(self, *, owner: str | None, all_owners: bool, status: str | None = None,
                   model: str | None = None, source: str | None = None,
                   after: str | None = None, limit: int = 20) -> JobPage:
        """Newest first; ``after`` is the id of the last job of the previous page."""
        query = sa.select(jobs).order_by(jobs.c.id.desc()).limit(limit + 1)
        if not all_owners:
            query = query.where(jobs.c.owner.is_(None) if owner is None else jobs.c.owner == owner)
        if status:
            query = query.where(jobs.c.status == status)
        if model:
            query = query.where(jobs.c.model == model)
        if source:
            query = query.where(jobs.c.source == source)
        if after:
            query = query.where(jobs.c.id < after)
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return JobPage([_record(r) for r in rows[:limit]], has_more=len(rows) > limit)

    async def of_batch(self, batch_id: str) -> list[JobRecord]:
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(sa.select(jobs).where(jobs.c.batch_id == batch_id)
                                       .order_by(jobs.c.batch_index))).all()
        return [_record(r) for r in rows]

    async def batch_counts(self, batch_id: str) -> dict[str, int]:
        query = (sa.select(jobs.c.status, sa.func.count()).where(jobs.c.batch_id == batch_id)
                 .group_by(jobs.c.status))
        async with self.db.engine.connect() as conn:
            return {str(s): int(n) for s, n in (await conn.execute(query)).all()}

    # -- the worker's state changes ---------------------------------------------------------
    async def claim(self, job_id: str, worker: str, lease: float,
                    max_attempts: int) -> JobRecord | None:
        """Take a pending job, or a running one whose lease expired; None if someone else has it."""
        now = time.time()
        claimable = sa.or_(jobs.c.status == "pending",
                           sa.and_(jobs.c.status == "running", jobs.c.lease_expires_at < now))
        async with self.db.engine.begin() as conn:
            result = await conn.execute(
                sa.update(jobs).where(jobs.c.id == job_id, claimable,
                                      jobs.c.attempts < max_attempts,
                                      sa.or_(jobs.c.deadline_at.is_(None),
                                             jobs.c.deadline_at > now))
                .values(status="running", claimed_by=worker, lease_expires_at=now + lease,
                        attempts=jobs.c.attempts + 1,
                        started_at=sa.func.coalesce(jobs.c.started_at, now)))
        if result.rowcount != 1:
            return None
        return await self.get(job_id)

    async def renew(self, job_id: str, worker: str, lease: float) -> bool:
        """Extend the lease; False when the job is no longer ours (cancelled or taken over)."""
        async with self.db.engine.begin() as conn:
            result = await conn.execute(
                sa.update(jobs).where(jobs.c.id == job_id, jobs.c.claimed_by == worker,
                                      jobs.c.status == "running")
                .values(lease_expires_at=time.time() + lease))
        return bool(result.rowcount == 1)

    async def finish(self, job_id: str, worker: str | None, status: str, *,
                     result: dict[str, Any] | None = None, error: dict[str, Any] | None = None,
                     status_code: int | None = None, usage: dict[str, Any] | None = None,
                     from_status: tuple[str, ...] = ("running",)) -> bool:
        """Store the outcome once: only the worker holding the job (or, for ``worker=None``,
        whoever moves it out of ``from_status``) succeeds."""
        condition = [jobs.c.id == job_id, jobs.c.status.in_(from_status)]
        if worker is not None:
            condition.append(jobs.c.claimed_by == worker)
        webhook_state = sa.case((jobs.c.webhook_url.is_not(None), "pending"), else_=None)
        async with self.db.engine.begin() as conn:
            updated = await conn.execute(
                sa.update(jobs).where(*condition)
                .values(status=status, result=result, error=error, status_code=status_code,
                        usage=usage, finished_at=time.time(), lease_expires_at=None,
                        webhook_state=webhook_state))
        return bool(updated.rowcount == 1)

    async def release(self, job_id: str, worker: str) -> None:
        """Hand a job back on shutdown: pending again, and this attempt does not count."""
        async with self.db.engine.begin() as conn:
            await conn.execute(
                sa.update(jobs).where(jobs.c.id == job_id, jobs.c.claimed_by == worker,
                                      jobs.c.status == "running")
                .values(status="pending", claimed_by=None, lease_expires_at=None,
                        attempts=jobs.c.attempts - 1))

    async def recoverable(self, models: Collection[str] | None = None) -> list[JobRecord]:
        """Jobs to (re-)enqueue: pending ones and running ones whose lease expired; only of
        ``models`` when given."""
        now = time.time()
        query = (sa.select(jobs).where(sa.or_(
            jobs.c.status == "pending",
            sa.and_(jobs.c.status == "running", jobs.c.lease_expires_at < now)))
            .order_by(jobs.c.priority.desc(), jobs.c.id))
        if models is not None:
            if not models:
                return []
            query = query.where(jobs.c.model.in_(sorted(models)))
        async with self.db.engine.connect() as conn:
            return [_record(r) for r in (await conn.execute(query)).all()]

    async def overdue(self) -> list[str]:
        """Ids of pending jobs past their deadline."""
        query = sa.select(jobs.c.id).where(jobs.c.status == "pending",
                                           jobs.c.deadline_at < time.time())
        async with self.db.engine.connect() as conn:
            return [str(r[0]) for r in (await conn.execute(query)).all()]

    async def cancel_batch_pending(self, batch_id: str) -> int:
        async with self.db.engine.begin() as conn:
            result = await conn.execute(
                sa.update(jobs).where(jobs.c.batch_id == batch_id, jobs.c.status == "pending")
                .values(status="cancelled", finished_at=time.time(),
                        error={"message": "The batch was cancelled.", "type": "cancelled",
                               "param": None, "code": "batch_cancelled"}))
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
        async with self.db.engine.connect() as conn:
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

    async def events_after(self, job_id: str, seq: int) -> list[JobEvent]:
        query = (sa.select(job_events.c.seq, job_events.c.kind, job_events.c.data)
                 .where(job_events.c.job_id == job_id, job_events.c.seq > seq)
                 .order_by(job_events.c.seq))
        async with self.db.engine.connect() as conn:
            return [JobEvent(int(s), str(k), str(d)) for s, k, d in (await conn.execute(query))]

    # -- webhooks ---------------------------------------------------------------------------
    async def record_attempt(self, job_id: str, webhook_id: str, attempt: int, url: str,
                             status_code: int | None, error: str | None) -> None:
        async with self.db.engine.begin() as conn:
            await conn.execute(sa.insert(webhook_attempts).values(
                job_id=job_id, webhook_id=webhook_id, attempt=attempt, url=url,
                status_code=status_code, error=error, created_at=time.time()))

    async def attempts(self, job_id: str) -> list[dict[str, Any]]:
        query = (sa.select(webhook_attempts).where(webhook_attempts.c.job_id == job_id)
                 .order_by(webhook_attempts.c.id))
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        # keys are str subclasses (quoted_name): plain str for JSON encoders
        return [{str(k): v for k, v in r._asdict().items() if k not in {"id", "job_id"}}
                for r in rows]

    async def set_webhook_state(self, job_id: str, state: str) -> None:
        async with self.db.engine.begin() as conn:
            await conn.execute(sa.update(jobs).where(jobs.c.id == job_id)
                               .values(webhook_state=state))

    async def pending_webhooks(self) -> list[JobRecord]:
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(sa.select(jobs).where(jobs.c.webhook_state == "pending")
                                       .order_by(jobs.c.id))).all()
        return [_record(r) for r in rows]
