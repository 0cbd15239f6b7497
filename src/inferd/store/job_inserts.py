"""Group commit of new jobs: concurrent submissions share one multi-row INSERT (``Grouped``).

Under load a gateway commits tens of jobs per round trip, and with one client it still commits
each at once (no timer). Each submitter learns its own outcome; a job with an idempotency key
takes the single-row path, which reports a taken key.
"""

from __future__ import annotations

import sqlalchemy as sa

from inferd.store.groups import Grouped
from inferd.store.jobs import JobRecord, JobStore, json_text, pg_array
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
            if self.store.db.dialect == "postgresql":
                # one array per column (``_PG_INSERT``): no statement to build or compile
                columns = [[getattr(job, name) for job in group] for name in _COLUMNS]
                for index in _JSON_INDEXES:
                    columns[index] = [json_text(value) for value in columns[index]]
                await conn.exec_driver_sql(_PG_INSERT, tuple(columns))
            else:
                await conn.execute(sa.insert(jobs), [job.values() for job in group])
        return [None] * len(group)


def _pg_insert_sql() -> tuple[str, list[str], list[int]]:
    """The group insert on PostgreSQL: ``INSERT ... SELECT ... FROM unnest(arrays)``, one
    array parameter per column (JSON columns as text, cast back); its column names; the
    indexes of its JSON columns."""
    names, arrays, values, json_indexes = [], [], [], []
    for index, column in enumerate(jobs.c):
        names.append(column.name)
        if isinstance(column.type, sa.JSON):
            json_indexes.append(index)
            arrays.append(f"${index + 1}::TEXT[]")
            values.append(f"{column.name}::json")
        else:
            arrays.append(f"${index + 1}::{pg_array(column)}")
            values.append(column.name)
    sql = (f"INSERT INTO {jobs.name} ({', '.join(names)}) SELECT {', '.join(values)} "
           f"FROM unnest({', '.join(arrays)}) AS t({', '.join(names)})")
    return sql, names, json_indexes


_PG_INSERT, _COLUMNS, _JSON_INDEXES = _pg_insert_sql()
