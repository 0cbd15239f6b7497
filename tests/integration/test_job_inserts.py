"""Group commit of new jobs on every supported store: each submitter gets its own outcome."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import sqlalchemy as sa

from inferd.ids import new_id
from inferd.store.job_inserts import GroupInserter
from inferd.store.jobs import JobRecord, JobStore


def record(**extra: Any) -> JobRecord:
    fields: dict[str, Any] = {"request": {"model": "echo"}, "source": "api", **extra}
    return JobRecord(id=new_id("job"), endpoint="/v1/chat/completions", model="echo",
                     request_hash="h", owner=None, owner_scope="user", **fields)


async def test_concurrent_inserts_share_transactions_and_all_land(database: Any) -> None:
    store = JobStore(database)
    inserts = GroupInserter(store)
    jobs = [record() for _ in range(120)]
    full = record(priority=3, meta={"metadata": {"k": "ü"}}, deadline_at=1e10,
                  webhook_url="http://127.0.0.1:9/hook", lease_expires_at=2e9,
                  request={"model": "echo", "messages": [{"role": "user", "content": "x"}],
                           "n": 2, "temperature": 0.5})
    jobs.append(full)
    results = await asyncio.gather(*(inserts.insert(j) for j in jobs))
    assert all(created for _, created in results)
    for job in jobs:
        stored = await store.get(job.id)
        assert stored is not None and stored.status == "pending"
    # every column round-trips (PostgreSQL's group insert binds one array per column)
    stored = await store.get(full.id)
    assert stored is not None
    assert stored.values() == {**full.values(), "created_at": stored.created_at}
    assert abs(stored.created_at - full.created_at) < 1e-3


async def test_a_refused_group_fails_its_callers_and_the_next_group_lands(database: Any) -> None:
    store = JobStore(database)
    inserts = GroupInserter(store)
    first = record()
    await inserts.insert(first)
    duplicate = record()
    duplicate.id = first.id  # the same primary key: the whole group is refused
    with pytest.raises(sa.exc.IntegrityError):
        await inserts.insert(duplicate)
    later = record()
    assert await inserts.insert(later) == (later, True)
    assert await store.get(later.id) is not None


async def test_an_idempotency_key_still_returns_the_existing_job(database: Any) -> None:
    store = JobStore(database)
    inserts = GroupInserter(store)
    first = record(idempotency_scope="k:1")
    assert (await inserts.insert(first))[1] is True
    again, created = await inserts.insert(record(idempotency_scope="k:1"))
    assert not created and again.id == first.id


async def test_a_value_too_long_for_its_column_is_refused_not_cut(database: Any) -> None:
    if database.dialect == "sqlite":
        pytest.skip("SQLite does not enforce column lengths")
    store = JobStore(database)
    inserts = GroupInserter(store)
    too_long = record(source="s" * 17)  # ``source`` is VARCHAR(16)
    with pytest.raises(sa.exc.DBAPIError):
        await inserts.insert(too_long)
    assert await store.get(too_long.id) is None
