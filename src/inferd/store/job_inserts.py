"""Group commit of new jobs: concurrent submissions share one multi-row INSERT (``Grouped``).

Under load a gateway commits tens of jobs per round trip, and with one client it still commits
each at once (no timer). Each submitter learns its own outcome; a job with an idempotency key
takes the single-row path, which reports a taken key.
"""

from __future__ import annotations

import sqlalchemy as sa

from inferd.store.groups import Grouped
from inferd.store.jobs import JobRecord, JobStore
from inferd.store.tables_jobs import jobs

MAX_ROWS = 500


class GroupInserter:
    """``insert(job)`` with the semantics of ``JobStore.insert``, committed in groups."""

    def __init__(self, store: JobStore) -> None:
        self.store = store
        self._group: Grouped[JobRecord, None] = Grouped(self._insert, MAX_ROWS)

    async def insert(self, job: JobRecord) -> tuple[JobRecord, bool]:
        if job.idempotency_scope is not None:
            return await self.store.insert(job)
        await self._group(job)
        return job, True

    async def _insert(self, group: list[JobRecord]) -> list[None]:
        # one statement: atomic by itself, so no BEGIN/COMMIT round trips around it
        async with self.store.db.statement() as conn:
            await conn.execute(sa.insert(jobs), [job.values() for job in group])
        return [None] * len(group)
