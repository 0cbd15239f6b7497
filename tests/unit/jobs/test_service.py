"""``JobService``: submit, follow, cancel; which jobs a process takes; followers' events."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from inferd.auth.principal import OPEN_MODE, Principal
from inferd.errors import Conflict, ModelNotFound, PermissionDenied
from inferd.ids import new_id
from inferd.store.jobs import JobRecord, JobStore
from tests.unit.jobs.conftest import Parts, add_echo

CHAT = {"model": "echo", "messages": [{"role": "user", "content": "one two three"}]}


async def finished(service: Any, job_id: str) -> JobRecord:
    job: JobRecord = await service.wait(OPEN_MODE, job_id, within=30)
    assert job.finished, job
    return job


async def test_a_submitted_job_runs_to_its_result(parts: Parts) -> None:
    service = parts.service()
    await service.start()
    try:
        job, created = await service.submit(OPEN_MODE, "/v1/chat/completions", CHAT)
        assert created and job.status == "pending" and job.model == "echo"
        done = await finished(service, job.id)
        assert done.status == "completed" and done.attempts == 1
        assert done.result is not None
        assert done.result["choices"][0]["message"]["content"] == "one two three"
        kinds = [e.kind for e in await service.store.events_after(job.id, 0)]
        assert kinds[0] == "status" and "token" in kinds
    finally:
        await service.close()


async def test_idempotency_key_returns_the_job_or_refuses_another_request(parts: Parts) -> None:
    service = parts.service()
    await service.start()
    try:
        first, created = await service.submit(OPEN_MODE, "/v1/chat/completions", CHAT,
                                              idempotency_key="k")
        again, created_again = await service.submit(OPEN_MODE, "/v1/chat/completions", CHAT,
                                                    idempotency_key="k")
        assert created and not created_again and again.id == first.id
        with pytest.raises(Conflict) as refused:
            await service.submit(OPEN_MODE, "/v1/chat/completions",
                                 {**CHAT, "max_tokens": 1}, idempotency_key="k")
        assert refused.value.code == "idempotency_conflict"
    finally:
        await service.close()


async def test_submit_refuses_unknown_and_forbidden_models(parts: Parts) -> None:
    service = parts.service()
    with pytest.raises(ModelNotFound):
        await service.submit(OPEN_MODE, "/v1/chat/completions", {**CHAT, "model": "nope"})
    limited = Principal(key_id="1", scope="user", allowed_models=frozenset({"other"}))
    with pytest.raises(PermissionDenied):
        await service.submit(limited, "/v1/chat/completions", CHAT)
    assert await service.store.recoverable() == []  # nothing was stored


async def test_cancel_a_pending_job_then_cancel_again(parts: Parts) -> None:
    service = parts.service(concurrency=0)  # no worker takes it
    await service.start()
    try:
        job, _ = await service.submit(OPEN_MODE, "/v1/chat/completions", CHAT)
        cancelled = await service.cancel(OPEN_MODE, job.id)
        assert cancelled.status == "cancelled"
        assert cancelled.error is not None and cancelled.error["code"] == "cancelled"
        with pytest.raises(Conflict):
            await service.cancel(OPEN_MODE, job.id)
    finally:
        await service.close()


async def test_jobs_of_models_this_process_cannot_run_stay_pending_for_others(
        parts: Parts) -> None:
    """A job of a model without a replica here is neither queued nor claimed; once the model
    gets a replica, the sweep takes it and it runs."""
    parts.router.set_model("elsewhere")  # known (say, from the catalogue) but not runnable
    service = parts.service()
    await service.start()
    try:
        job = JobRecord(id=new_id("job"), endpoint="/v1/chat/completions", model="elsewhere",
                        request={**CHAT, "model": "elsewhere"}, request_hash="h")
        await service.store.insert(job)
        await service.enqueue(job)
        await service.maintenance.recover()
        assert service.queue.depth() == 0
        assert not service.runnable("elsewhere") and service.runnable("echo")
        assert (await service.store.get(job.id)).status == "pending"  # type: ignore[union-attr]
        add_echo(parts.router, "elsewhere")
        done = await finished(service, job.id)
        assert done.status == "completed"
    finally:
        await service.close()


async def test_a_job_finished_by_another_process_leaves_no_signal_behind(
        parts: Parts) -> None:
    """A follower here sees the end of a job another process finished (by polling); the
    wake-up event it took is dropped when it stops following."""
    service = parts.service(concurrency=0)
    other = JobStore(parts.db)  # another process's view of the same database
    await service.start()
    try:
        job, _ = await service.submit(OPEN_MODE, "/v1/chat/completions", CHAT)
        waiting = asyncio.create_task(service.wait(OPEN_MODE, job.id, within=30))
        follow = asyncio.create_task(_drain(service.events(OPEN_MODE, job.id)))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # until both follow the job
            if len(service.signals) and service.signals._followers.get(job.id) == 2:
                break
            await asyncio.sleep(0.01)
        assert len(service.signals) == 1  # followed: one event for the job
        assert await other.finish(job.id, None, "failed", error={"message": "x"},
                                  from_status=("pending",))
        assert (await waiting).status == "failed"
        assert (await follow)[-1] == "failed"
        assert service.signals._events == {} and service.signals._followers == {}
    finally:
        await service.close()


async def _drain(events: Any) -> list[str]:
    return [kind async for _seq, kind, _data in events]
