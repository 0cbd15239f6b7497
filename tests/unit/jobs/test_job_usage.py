"""A job's usage records are committed with its result, in one transaction, not through the
usage recorder (whose last milliseconds a crash would lose); a run whose outcome is not stored hands
its records to the recorder."""

from __future__ import annotations

from inferd.auth.principal import OPEN_MODE
from inferd.engines.echo import EchoEngine
from inferd.routing.router import Replica
from inferd.settings import ModelSpec
from inferd.store.usage import UsageStore
from tests.helpers import wait_for_async
from tests.unit.jobs.conftest import Parts

CHAT = {"model": "echo", "messages": [{"role": "user", "content": "one two three"}]}


async def test_the_usage_of_a_job_is_stored_with_its_result(parts: Parts) -> None:
    recorder = parts.metering.recorder
    await recorder.close()  # nothing is flushed from the buffer from now on
    service = parts.service()
    await service.start()
    try:
        jobs = [(await service.submit(OPEN_MODE, "/v1/chat/completions", CHAT))[0]
                for _ in range(3)]
        for job in jobs:
            done = await service.wait(OPEN_MODE, job.id, within=30)
            assert done.status == "completed", done
        rows = await UsageStore(parts.db).recent(limit=10)
        assert recorder.pending == 0
        assert sorted(r["request_id"] for r in rows) == sorted(j.id for j in jobs)
        for row in rows:
            assert (row["status"], row["model"], row["endpoint"]) == (200, "echo", "chat")
            assert row["prompt_tokens"] == 3 and row["completion_tokens"] == 3
    finally:
        await service.close()


async def test_a_cancelled_run_hands_its_usage_to_the_recorder(parts: Parts) -> None:
    parts.router.add(Replica(id="local:slow", model="slow", engine=EchoEngine(
        ModelSpec(name="slow", kind="echo", echo_delay=0.05))))
    recorder = parts.metering.recorder
    await recorder.close()  # stopped: the spilled record waits in its queue
    service = parts.service()
    await service.start()
    try:
        words = " ".join(f"w{i}" for i in range(400))
        job, _ = await service.submit(OPEN_MODE, "/v1/chat/completions", {
            "model": "slow", "messages": [{"role": "user", "content": words}]})

        async def generating() -> bool:
            return any(e.kind == "token" for e in await service.store.events_after(job.id, 0))

        await wait_for_async(generating, what="the job's first tokens")
        await service.cancel(OPEN_MODE, job.id)

        async def spilled() -> bool:
            return recorder.pending == 1

        await wait_for_async(spilled, what="the cancelled run's usage record in the buffer")
        assert await UsageStore(parts.db).count() == 0  # nothing stored with the job
        await recorder.start()  # the recorder writes it
        await recorder.flush()
        [row] = await UsageStore(parts.db).recent()
        assert row["request_id"] == job.id and row["status"] == 499
    finally:
        await service.close()
