"""Group commit of new jobs: concurrent submissions share one multi-row INSERT transaction.

While one transaction is in flight the jobs that arrive meanwhile wait and go together in the
next, so under load a gateway commits tens of jobs per round trip and with one client it still
commits each at once (no timer). Each submitter learns its own outcome; a job with an
idempotency key takes the single-row path, which reports a taken key.
"""

from __future__ import annotations

import asyncio

import sqlalchemy as sa

from inferd.store.jobs import JobRecord, JobStore
from inferd.store.tables_jobs import jobs

MAX_ROWS = 500


class GroupInserter:
    """``insert(job)`` with the semantics of ``JobStore.insert``, committed in groups."""

    def __init__(self, store: JobStore) -> None:
        self.store = store
        self._waiting: list[tuple[JobRecord, asyncio.Future[None]]] = []
        self._draining: asyncio.Task[None] | None = None

    async def insert(self, job: JobRecord) -> tuple[JobRecord, bool]:
        if job.idempotency_scope is not None:
            return await self.store.insert(job)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((job, done))
        if self._draining is None or self._draining.done():
            self._draining = asyncio.create_task(self._drain())
        await done
        return job, True

    async def _drain(self) -> None:
        while self._waiting:
            group, self._waiting = self._waiting[:MAX_ROWS], self._waiting[MAX_ROWS:]
            try:
                async with self.store.db.engine.begin() as conn:
                    await conn.execute(sa.insert(jobs), [job.values() for job, _ in group])
            except Exception as exc:  # every job of the group was refused: tell each caller
                for _, done in group:
                    if not done.done():
                        done.set_exception(exc)
                continue
            for _, done in group:
                if not done.done():
                    done.set_result(None)
