"""Jobs that cannot be turned against the service: a job whose runs end their process runs
alone afterwards and is quarantined at its second crash; a rate-limited job backs off (no
claim or sweep before its time, no usage record); a key's unfinished jobs and batch lines are
capped; a background response's job is private to its key."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson
import pytest

from inferd.auth.principal import Principal
from inferd.errors import NotFound, RateLimited
from inferd.jobs.runner import EventLog, Outcome
from inferd.settings import JobSettings
from inferd.store.jobs import JobRecord
from inferd.store.usage import UsageStore
from tests.helpers import wait_for_async
from tests.unit.jobs.conftest import Parts
from tests.unit.jobs.test_worker import Acked, pool_with, stored

DONE = Outcome("completed", result={}, status_code=200)


async def crashed(service: Any, job: JobRecord, worker: str = "gone") -> None:
    """``job`` claimed by a worker whose process then died: its lease lapses unrenewed."""
    assert await service.store.claim(job.id, worker, 0.01, 3, 5) is not None

    async def lapsed() -> bool:
        return job.id in [j.id for j in await service.store.recoverable()]

    await wait_for_async(lapsed, what="the dead worker's lease to lapse")


async def test_one_crash_is_forgiven_the_job_runs_again_on_probation(parts: Parts) -> None:
    service = parts.service()
    job = await stored(parts, service)
    await crashed(service, job)
    await service.pool.process(Acked(job))
    done = await service.store.get(job.id)
    assert done is not None and done.status == "completed"
    assert (done.attempts, done.crashes) == (2, 1)
    await service.close()


async def test_a_second_crash_quarantines_the_job_instead_of_running_it(parts: Parts) -> None:
    service = parts.service()
    ran: list[str] = []

    async def run(job: JobRecord, events: EventLog) -> Outcome:
        ran.append(job.id)
        return DONE

    pool = pool_with(service, run)
    job = await stored(parts, service)
    await crashed(service, job, "first")
    await crashed(service, job, "second")  # its probation run ended its process too
    delivery = Acked(job)
    await pool.process(delivery)
    failed = await service.store.get(job.id)
    assert failed is not None and failed.status == "failed" and delivery.acked
    assert failed.error is not None and failed.error["code"] == "job_quarantined"
    assert "2 times" in failed.error["message"] and failed.status_code == 500
    assert ran == [] and failed.attempts == 2
    # a setting allows more crashes
    lenient = parts.service(max_crashes=3)
    other = await stored(parts, lenient)
    await crashed(lenient, other, "first")
    await crashed(lenient, other, "second")
    await lenient.pool.process(Acked(other))
    done = await lenient.store.get(other.id)
    assert done is not None and done.status == "completed" and done.crashes == 2
    await service.close()
    await lenient.close()


async def test_a_job_on_probation_runs_alone_in_its_process(parts: Parts) -> None:
    service = parts.service(concurrency=4)
    started: dict[str, asyncio.Event] = {}
    let_go: dict[str, asyncio.Event] = {}

    async def run(job: JobRecord, events: EventLog) -> Outcome:
        started[job.id].set()
        await let_go[job.id].wait()
        return DONE

    pool = pool_with(service, run)
    ordinary = await stored(parts, service)
    suspect = await stored(parts, service, crashes=1)  # a run of it ended its process
    later = await stored(parts, service)
    for job in (ordinary, suspect, later):
        started[job.id], let_go[job.id] = asyncio.Event(), asyncio.Event()

    async def status(job: JobRecord) -> tuple[str, int]:
        row = await service.store.get(job.id)
        assert row is not None
        return row.status, row.attempts

    tasks = [asyncio.create_task(pool.process(Acked(ordinary)))]
    await started[ordinary.id].wait()
    tasks.append(asyncio.create_task(pool.process(Acked(suspect))))
    async def handed_back() -> bool:
        return pool.gate.waiting == 1 and await status(suspect) == ("pending", 0)

    # claimed while another job runs: handed back (its attempt not counted), waiting
    await wait_for_async(handed_back, what="the suspect handed back and waiting")
    tasks.append(asyncio.create_task(pool.process(Acked(later))))
    let_go[ordinary.id].set()
    await started[suspect.id].wait()
    assert await status(ordinary) == ("completed", 1)
    assert await status(suspect) == ("running", 1)
    assert await status(later) == ("pending", 0) and not started[later.id].is_set()
    let_go[suspect.id].set()
    await started[later.id].wait()  # the suspect has ended: the others run again
    assert await status(suspect) == ("completed", 1)
    let_go[later.id].set()
    await asyncio.gather(*tasks)
    assert await status(later) == ("completed", 1)
    await service.close()


async def test_a_deferred_job_backs_off_and_leaves_no_usage_record(
        parts: Parts, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="inferd.requests")
    parts.metering.log_requests = True  # a line per request answered
    recorder = parts.metering.recorder
    # No worker loop (concurrency 0): the test hands each job to the pool itself, so that no
    # loop of the pool claims the submitted jobs from the queue before it does.
    service = parts.service(concurrency=0)
    limited = Principal(key_id="7", scope="user", rpm=1)
    chat = {"model": "echo", "messages": [{"role": "user", "content": "a b"}]}
    first, _ = await service.submit(limited, "/v1/chat/completions", chat)
    second, _ = await service.submit(limited, "/v1/chat/completions", chat)
    assert service.pool is not None
    await service.pool.process(Acked(first))
    before = time.time()
    await service.pool.process(Acked(second))  # over the key's rpm: deferred
    deferred = await service.store.get(second.id)
    assert deferred is not None and deferred.status == "pending"
    assert (deferred.attempts, deferred.deferrals) == (0, 1)
    assert deferred.not_before is not None and deferred.not_before >= before + 1.0
    # neither the sweep nor a delivery of its id runs it before its time
    assert second.id not in [j.id for j in await service.store.recoverable()]
    assert await service.maintenance.recover() == 0
    await service.pool.process(Acked(second))
    again = await service.store.get(second.id)
    assert again is not None and (again.status, again.attempts) == ("pending", 0)
    # one usage record (the first job's), none for the deferral
    await recorder.flush()
    rows = await UsageStore(parts.db).recent(limit=10)
    assert [(r["request_id"], r["status"]) for r in rows] == [(first.id, 200)]
    # and its log line is a debug one
    lines = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "inferd.requests"]
    assert (logging.DEBUG, "chat echo 429") in lines
    assert all(level == logging.DEBUG for level, text in lines if text.endswith("429")), lines
    await service.close()


def test_deferrals_double_up_to_a_cap() -> None:
    settings = JobSettings(defer_seconds=1.5, defer_max_seconds=20)
    assert [settings.defer_delay(n) for n in range(6)] == [1.5, 3, 6, 12, 20, 20]
    assert settings.defer_delay(10_000) == 20


async def test_a_key_is_capped_on_unfinished_jobs_and_batch_lines(parts: Parts) -> None:
    # no worker (concurrency 0): the jobs stay unfinished until cancelled, whatever the pace
    service = parts.service(max_pending_per_key=2, max_batch_lines_per_key=3, concurrency=0)
    key = Principal(key_id="9", scope="user")
    other = Principal(key_id="10", scope="user")
    chat = {"model": "echo", "messages": [{"role": "user", "content": "a"}]}
    first, _ = await service.submit(key, "/v1/chat/completions", chat)
    await service.submit(key, "/v1/chat/completions", chat)
    with pytest.raises(RateLimited) as refused:
        await service.submit(key, "/v1/chat/completions", chat)
    assert refused.value.status == 429 and refused.value.code == "too_many_pending_jobs"
    await service.submit(other, "/v1/chat/completions", chat)  # another key is not held up
    await service.cancel(key, first.id)  # one finished: room for one more
    await service.submit(key, "/v1/chat/completions", chat)

    lines = "\n".join(orjson.dumps({"custom_id": str(i), "method": "POST",
                                    "url": "/v1/chat/completions", "body": chat}).decode()
                       for i in range(2)).encode()
    upload = await service.batches.upload(key, "in.jsonl", "batch", lines)
    await service.batches.create(key, upload.id, "/v1/chat/completions", "24h", None)
    with pytest.raises(RateLimited) as too_many:
        await service.batches.create(key, upload.id, "/v1/chat/completions", "24h", None)
    assert too_many.value.code == "too_many_pending_batch_lines"
    await service.close()


async def test_a_background_response_job_is_private_to_its_key(parts: Parts) -> None:
    service = parts.service()
    owner = Principal(key_id="11", scope="user")
    admin = Principal(key_id="1", scope="admin")
    body = {"model": "echo", "chat": {"model": "echo", "messages": [
        {"role": "user", "content": "a"}]}, "response": {"id": "resp_x"}}
    private, _ = await service.submit(owner, "/v1/responses", body, source="responses")
    public, _ = await service.submit(owner, "/v1/chat/completions", {
        "model": "echo", "messages": [{"role": "user", "content": "a"}]})
    assert (await service.get(owner, private.id)).id == private.id
    assert (await service.get(admin, public.id)).id == public.id  # admins see other jobs
    for action in (service.get, service.cancel, service.delete):
        with pytest.raises(NotFound):
            await action(admin, private.id)
    with pytest.raises(NotFound):
        async for _ in service.events(admin, private.id):
            pass
    listed = [j.id for j in (await service.page(admin, limit=100)).jobs]
    assert public.id in listed and private.id not in listed
    assert private.id in [j.id for j in (await service.page(owner, limit=100)).jobs]
    await service.close()
