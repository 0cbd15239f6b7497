"""A job submitted to a broker is stored already marked queued (the sweep leaves it alone);
when its publish fails the mark comes off, so the sweep publishes it. Real RabbitMQ."""

from __future__ import annotations

import time
import uuid

import aio_pika
import pytest

from inferd.auth.principal import OPEN_MODE
from inferd.jobs.broker import RabbitQueue, queue_name
from inferd.jobs.cluster import build_jobs
from inferd.settings import JobSettings
from inferd.store.jobs import JobStore
from tests.helpers import require_service, wait_for_async
from tests.unit.jobs.conftest import Parts

pytestmark = pytest.mark.rabbitmq

URL = "amqp://guest:guest@127.0.0.1:5672/"
CHAT = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}


async def test_a_submitted_job_is_stored_marked_and_unmarked_when_its_publish_fails(
        parts: Parts) -> None:
    require_service("rabbitmq")
    prefix = f"test-{uuid.uuid4().hex[:10]}"
    store = JobStore(parts.db)
    up = RabbitQueue(URL, prefix=prefix)
    down = RabbitQueue("amqp://guest:guest@127.0.0.1:1/", prefix=prefix, publish_timeout=2)
    try:
        confirmed = await build_jobs(parts.db, parts.router, parts.inference, JobSettings(),
                                     queue=lambda _dead: up, run_workers=False,
                                     open_mode=OPEN_MODE).submit(
            OPEN_MODE, "/v1/chat/completions", CHAT)
        stored = await store.get(confirmed[0].id)
        assert stored is not None and stored.lease_expires_at is not None
        assert stored.lease_expires_at > time.time() + 60  # queued: the sweep leaves it
        lost = await build_jobs(parts.db, parts.router, parts.inference, JobSettings(),
                                queue=lambda _dead: down, run_workers=False,
                                open_mode=OPEN_MODE).submit(
            OPEN_MODE, "/v1/chat/completions", CHAT)
        assert down.unpublished() == 1

        async def unmarked() -> bool:
            job = await store.get(lost[0].id)
            return job is not None and job.lease_expires_at is None

        await wait_for_async(unmarked, within=30, what="the failed publish's unmark")
        assert {j.id for j in await store.recoverable()} == {lost[0].id}
    finally:
        await up.close()
        await down.close()
        connection = await aio_pika.connect(URL)
        async with connection:
            channel = await connection.channel()
            await channel.queue_delete(queue_name(prefix, "echo"))
            await channel.queue_delete(f"{prefix}.dead")
            await channel.exchange_delete(f"{prefix}.dead")
