"""The job store on SQLite, PostgreSQL and MariaDB: one claim wins, a result is stored once,
an expired lease is taken over, idempotency keys hold, events and files round-trip."""

from __future__ import annotations

import asyncio
import time

from inferd.ids import new_id
from inferd.store.db import Database
from inferd.store.files import FileRecord, FileStore
from inferd.store.jobs import Finished, JobEvent, JobRecord, JobStore, Outcome
from inferd.store.tables_jobs import FILE_PART_BYTES
from inferd.store.usage import UsageStore
from inferd.usage import UsageRecord
from tests.helpers import wait_for_async


def _usage(request_id: str) -> UsageRecord:
    return UsageRecord(time.time(), request_id, "1", "echo", None, "chat", False, 200, None,
                       1, 2, 3, 4.0, None, None, None)


def _job(**fields: object) -> JobRecord:
    base: dict[str, object] = {"id": new_id("job"), "endpoint": "/v1/chat/completions",
                               "model": "echo", "request": {"model": "echo"},
                               "request_hash": "h"}
    return JobRecord(**{**base, **fields})  # type: ignore[arg-type]


async def test_only_one_of_many_workers_claims_a_job(database: Database) -> None:
    store = JobStore(database)
    job, created = await store.insert(_job())
    assert created
    claims = await asyncio.gather(*(store.claim(job.id, f"w{i}", 30, 3) for i in range(5)))
    winners = [c for c in claims if c is not None]
    assert len(winners) == 1 and winners[0].status == "running" and winners[0].attempts == 1
    worker = winners[0].claimed_by
    assert worker is not None
    assert not await store.finish(job.id, "someone-else", "completed", result={"x": 1})
    assert await store.finish(job.id, worker, "completed", result={"x": 1})
    assert not await store.finish(job.id, worker, "completed", result={"x": 2})
    stored = await store.get(job.id)
    assert stored is not None and stored.result == {"x": 1} and stored.finished


async def test_an_expired_lease_is_taken_over_and_the_old_worker_loses(database: Database) -> None:
    store = JobStore(database)
    job, _ = await store.insert(_job())
    assert await store.claim(job.id, "dead", 0.01, 3) is not None

    async def expired() -> list[str]:
        return [j.id for j in await store.recoverable()]

    assert await wait_for_async(expired, within=30, what="the lease's expiry") == [job.id]
    taken = await store.claim(job.id, "alive", 30, 3)
    assert taken is not None and taken.attempts == 2 and taken.claimed_by == "alive"
    assert not await store.renew(job.id, "dead", 30)
    assert not await store.finish(job.id, "dead", "completed", result={"from": "dead"})
    assert await store.finish(job.id, "alive", "completed", result={"from": "alive"})
    assert (await store.get(job.id)).result == {"from": "alive"}  # type: ignore[union-attr]


async def test_attempts_and_deadline_limit_claims(database: Database) -> None:
    store = JobStore(database)
    late, _ = await store.insert(_job(deadline_at=time.time() - 1))
    assert await store.claim(late.id, "w", 30, 3) is None
    assert await store.overdue() == [late.id]
    tired, _ = await store.insert(_job(attempts=3))
    assert await store.claim(tired.id, "w", 30, 3) is None


async def test_idempotency_key_returns_the_existing_job(database: Database) -> None:
    store = JobStore(database)
    first, created = await store.insert(_job(idempotency_scope="scope"))
    again, created_again = await store.insert(_job(idempotency_scope="scope", request_hash="other"))
    assert created and not created_again
    assert again.id == first.id and again.request_hash == "h"


async def test_cancel_wins_over_a_late_result(database: Database) -> None:
    store = JobStore(database)
    job, _ = await store.insert(_job(webhook_url="http://127.0.0.1:9/hook"))
    await store.claim(job.id, "w", 30, 3)
    assert await store.finish(job.id, None, "cancelled", from_status=("pending", "running"))
    assert not await store.finish(job.id, "w", "completed", result={"late": True})
    stored = await store.get(job.id)
    assert stored is not None and stored.status == "cancelled" and stored.result is None
    assert stored.webhook_state == "pending"
    assert [j.id for j in await store.pending_webhooks()] == [job.id]


async def test_events_replay_after_a_sequence_number_and_reset(database: Database) -> None:
    store = JobStore(database)
    job, _ = await store.insert(_job())
    await store.add_events(job.id, [JobEvent(1, "status", "{}"), JobEvent(2, "token", "a"),
                                    JobEvent(3, "token", "b")])
    assert [e.data for e in await store.events_after(job.id, 1)] == ["a", "b"]
    await store.add_events(job.id, [JobEvent(4, "reset", "{}")], replace_before=4)
    assert [e.seq for e in await store.events_after(job.id, 0)] == [4]
    assert await store.last_seq(job.id) == 4
    assert await store.delete(job.id)
    assert await store.events_after(job.id, 0) == []


async def test_files_larger_than_one_part_round_trip(database: Database) -> None:
    files = FileStore(database)
    content = bytes(range(256)) * (FILE_PART_BYTES // 256 * 2 + 3)
    record = FileRecord(id=new_id("file"), owner=None, purpose="batch", filename="x.jsonl",
                        bytes=len(content), created_at=time.time())
    await files.insert(record, content)
    assert await files.content(record.id) == content
    assert (await files.get(record.id)).bytes == len(content)  # type: ignore[union-attr]
    assert await files.delete(record.id)
    assert await files.get(record.id) is None


async def test_a_group_claim_takes_each_claimable_job_once_with_its_last_event(
        database: Database) -> None:
    store = JobStore(database)
    fresh, _ = await store.insert(_job())
    rerun, _ = await store.insert(_job())
    await store.add_events(rerun.id, [JobEvent(1, "status", "{}"), JobEvent(2, "token", "{}")])
    late, _ = await store.insert(_job(deadline_at=time.time() - 1))
    claims = await store.claim_many([fresh.id, rerun.id, late.id, fresh.id, "job_unknown"],
                                    "w1", 30, 3, start=True)
    assert [None if c is None else c.job.id for c in claims] == [
        fresh.id, rerun.id, None, None, None]  # a repeated id: its first caller only
    first = claims[0]
    assert first is not None and first.job.status == "running" and first.job.attempts == 1
    assert first.job.claimed_by == "w1" and first.job.request == {"model": "echo"}
    # with start=True PostgreSQL writes a first attempt's running event with the claim
    # (last_seq is then its number)
    started = database.dialect == "postgresql"
    assert [(c.started, c.last_seq) for c in claims if c is not None] == [
        (started, 1 if started else 0), (started, 3 if started else 2)]
    assert [(e.seq, e.kind, e.data) for e in await store.events_after(fresh.id, 0)] == (
        [(1, "status", '{"status":"running","attempt":1}')] if started else [])
    # claimed now: another worker's group gets nothing
    assert await store.claim_many([fresh.id, rerun.id], "w2", 30, 3) == [None, None]


async def test_a_group_finish_stores_only_the_outcomes_of_jobs_still_held(
        database: Database) -> None:
    store = JobStore(database)
    mine, _ = await store.insert(_job())
    cancelled, _ = await store.insert(_job(webhook_url="http://127.0.0.1:9/hook"))
    hooked, _ = await store.insert(_job(webhook_url="http://127.0.0.1:9/hook"))
    for job in (mine, cancelled, hooked):
        assert await store.claim(job.id, "w1", 30, 3) is not None
    assert await store.finish(cancelled.id, None, "cancelled", from_status=("running",))
    usage = UsageStore(database)
    before = await usage.count()
    mine_seq = await store.last_seq(mine.id)
    stored = await store.finish_many("w1", [
        Finished(mine.id, Outcome("completed", result={"n": 1}, status_code=200,
                                  usage={"total_tokens": 3}), [_usage(mine.id)],
                 [JobEvent(mine_seq + 1, "token", '{"index":0,"text":"last"}')]),
        Finished(cancelled.id, Outcome("completed", result={"n": 2}, status_code=200),
                 [_usage(cancelled.id)], [JobEvent(9, "token", '{"index":0,"text":"x"}')]),
        Finished(hooked.id, Outcome("failed", error={"message": "no"}, status_code=500)),
        Finished(mine.id, Outcome("failed"), [_usage(mine.id)])])  # twice: its first only
    assert stored == [True, False, True, False]
    # billed with the stored outcomes only: the cancelled job's run is not billed here
    assert await usage.count() == before + 1
    # the run's last events are stored with its outcome, and only with a stored one
    assert [(e.seq, e.data) for e in await store.events_after(mine.id, mine_seq)] == [
        (mine_seq + 1, '{"index":0,"text":"last"}')]
    assert await store.events_after(cancelled.id, 1) == []
    done = await store.get(mine.id)
    assert done is not None and done.status == "completed" and done.result == {"n": 1}
    assert done.usage == {"total_tokens": 3} and done.lease_expires_at is None
    assert done.finished_at is not None and done.webhook_state is None
    kept = await store.get(cancelled.id)
    assert kept is not None and kept.status == "cancelled" and kept.result is None
    failed = await store.get(hooked.id)
    assert failed is not None and failed.status == "failed" and failed.error == {"message": "no"}
    assert failed.webhook_state == "pending"
    # stored once: a second group with the same job changes nothing
    assert await store.finish_many("w1", [Finished(mine.id, Outcome("failed"))]) == [False]
    assert (await store.get(mine.id)).status == "completed"  # type: ignore[union-attr]


async def test_events_of_several_jobs_go_in_one_insert(database: Database) -> None:
    store = JobStore(database)
    first, _ = await store.insert(_job())
    second, _ = await store.insert(_job())
    await store.add_events_many([(first.id, [JobEvent(1, "status", '{"a":1}')]),
                                 (second.id, [JobEvent(1, "status", "{}"),
                                              JobEvent(2, "token", '{"text":"x"}')])])
    assert [(e.seq, e.data) for e in await store.events_after(first.id, 0)] == [(1, '{"a":1}')]
    assert [e.kind for e in await store.events_after(second.id, 0)] == ["status", "token"]


async def test_a_job_the_broker_holds_is_not_recovered_until_its_mark_lapses(
        database: Database) -> None:
    store = JobStore(database)
    queued, _ = await store.insert(_job())
    lost, _ = await store.insert(_job())
    lapsed, _ = await store.insert(_job())
    await store.mark_queued([queued.id], time.time() + 600)
    await store.mark_queued([lapsed.id], time.time() - 1)
    assert {j.id for j in await store.recoverable()} == {lost.id, lapsed.id}
    # claimed, then handed back: not queued any more, so the sweep publishes it again
    assert await store.claim(queued.id, "w", 30, 3) is not None
    await store.mark_queued([queued.id], time.time() + 600)  # a late mark of a running job
    assert (await store.get(queued.id)).status == "running"  # type: ignore[union-attr]
    await store.release(queued.id, "w")
    assert queued.id in {j.id for j in await store.recoverable()}


async def test_a_lapsed_claim_counts_a_crash_and_the_last_allowed_one_is_not_claimed(
        database: Database) -> None:
    store = JobStore(database)
    job, _ = await store.insert(_job())
    first = await store.claim(job.id, "first", 0.01, 5, 2)
    assert first is not None and first.crashes == 0  # a pending job: no crash

    async def lapsed() -> list[str]:
        return [j.id for j in await store.recoverable()]

    await wait_for_async(lapsed, within=30, what="the first lease's expiry")
    second = await store.claim(job.id, "second", 0.01, 5, 2)
    # counted from the status before the claim (MySQL assigns left to right)
    assert second is not None and (second.crashes, second.attempts) == (1, 2)
    await wait_for_async(lapsed, within=30, what="the second lease's expiry")
    assert await store.claim(job.id, "third", 30, 5, 2) is None  # quarantined, not run
    assert await store.claim(job.id, "third", 30, 5, 3) is not None  # a laxer limit runs it


async def test_a_deferred_job_is_neither_claimed_nor_recovered_before_its_time(
        database: Database) -> None:
    store = JobStore(database)
    job, _ = await store.insert(_job(owner="k1"))
    assert await store.claim(job.id, "w", 30, 3) is not None
    assert await store.count_unfinished("k1", batch=False) == 1
    await store.release(job.id, "w", not_before=time.time() + 3600)
    back = await store.get(job.id)
    assert back is not None and (back.status, back.attempts, back.deferrals) == ("pending", 0, 1)
    assert job.id not in [j.id for j in await store.recoverable()]
    assert await store.claim(job.id, "w", 30, 3) is None
    due, _ = await store.insert(_job(owner="k1"))
    assert await store.claim(due.id, "w", 30, 3) is not None
    await store.release(due.id, "w", not_before=time.time() - 1)  # its time has come
    assert due.id in [j.id for j in await store.recoverable()]
    assert await store.claim(due.id, "w", 30, 3) is not None
    assert await store.count_unfinished("k1", batch=False) == 2
    assert await store.count_unfinished("k1", batch=True) == 0
    assert await store.count_unfinished("k2", batch=False) == 0


async def test_pending_jobs_are_counted_per_model_with_the_oldest(database: Database) -> None:
    """What the job-queue metrics read (``inferd.jobs.stats``)."""
    store = JobStore(database)
    for model, created_at, status in (("echo", 1000.5, "pending"), ("echo", 2000.0, "pending"),
                                      ("echo", 500.0, "running"), ("other", 3000.25, "pending"),
                                      ("idle", 100.0, "completed")):
        await store.insert(_job(model=model, created_at=created_at, status=status))
    assert await store.pending_by_model() == {"echo": (2, 1000.5), "other": (1, 3000.25)}
