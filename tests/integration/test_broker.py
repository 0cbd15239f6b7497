"""The RabbitMQ job queue against the real broker: confirms, priorities, acknowledgement,
redelivery limit and dead letters, and the outbox when the broker cannot be reached."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import aio_pika
import pytest

from inferd.jobs.broker import RabbitDelivery, RabbitQueue, queue_name
from inferd.jobs.queue import QueuedJob
from tests.helpers import require_service

pytestmark = pytest.mark.rabbitmq

URL = "amqp://guest:guest@127.0.0.1:5672/"


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    require_service("rabbitmq")
    name = f"test-{uuid.uuid4().hex[:10]}"
    yield name
    connection = await aio_pika.connect(URL)
    async with connection:
        channel = await connection.channel()
        for model in ("m", "n"):
            await channel.queue_delete(queue_name(name, model))
        await channel.queue_delete(f"{name}.dead")
        await channel.exchange_delete(f"{name}.dead")


async def waiting(prefix: str, queue: str) -> int:
    connection = await aio_pika.connect(URL)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        return int(declared.declaration_result.message_count or 0)


async def test_job_ids_go_through_durable_queues_in_priority_order(prefix: str) -> None:
    publisher = RabbitQueue(URL, prefix=prefix)
    try:
        for job_id, priority in (("low", -3), ("normal", 0), ("high", 4), ("other", 0)):
            await publisher.put(QueuedJob(job_id, "n" if job_id == "other" else "m", priority))
        assert publisher.unpublished() == 0
        # confirmed: the messages are on the broker before anyone consumes
        assert await waiting(prefix, queue_name(prefix, "m")) == 3
    finally:
        await publisher.close()
    consumer = RabbitQueue(URL, prefix=prefix, prefetch=lambda _m: 1)
    try:
        order = []
        for _ in range(3):
            delivery = await asyncio.wait_for(consumer.get("m"), 10)
            order.append((delivery.job.id, delivery.job.priority))
            await delivery.ack()
        assert order == [("high", 4), ("normal", 0), ("low", -3)]
        other = await asyncio.wait_for(consumer.get("n"), 10)
        assert other.job == QueuedJob("other", "n", 0)
        await other.ack()
    finally:
        await consumer.close()
    assert await waiting(prefix, queue_name(prefix, "m")) == 0


async def test_unacknowledged_job_comes_back_then_dead_letters(prefix: str) -> None:
    publisher = RabbitQueue(URL, prefix=prefix)
    await publisher.put(QueuedJob("job-1", "m"))
    await publisher.close()
    dead: list[tuple[str, str]] = []
    gone = asyncio.Event()

    async def on_dead(job: QueuedJob, reason: str) -> None:
        dead.append((job.id, reason))
        gone.set()

    received = 0
    for _ in range(4):  # each consumer dies before it acknowledges
        consumer = RabbitQueue(URL, prefix=prefix, max_deliveries=3, on_dead=on_dead)
        try:
            get = asyncio.ensure_future(consumer.get("m"))
            dead_letter = asyncio.ensure_future(gone.wait())
            await asyncio.wait({get, dead_letter}, timeout=20,
                               return_when=asyncio.FIRST_COMPLETED)
            if get.done():
                assert get.result().job.id == "job-1"
                received += 1
            for task in (get, dead_letter):
                task.cancel()
        finally:
            await consumer.close()
        if dead:
            break
    assert received == 3
    assert dead and dead[0][0] == "job-1" and "delivered 3 times" in dead[0][1]
    assert await waiting(prefix, f"{prefix}.dead") == 1
    assert await waiting(prefix, queue_name(prefix, "m")) == 0


async def test_a_broker_outage_keeps_the_job_for_later(prefix: str) -> None:
    # nothing listens on this port: the publish fails, the id is kept and put() returns
    queue = RabbitQueue("amqp://guest:guest@127.0.0.1:1/", prefix=prefix, publish_timeout=2)
    try:
        await queue.put(QueuedJob("job-3", "m"))
        assert queue.unpublished() == 1
        await queue.put(QueuedJob("job-4", "m"))  # while it is down: kept without waiting
        assert queue.unpublished() == 2
        queue.url = URL  # the broker is back: the background retry publishes both
        for _ in range(300):  # poll with a deadline
            if not queue.unpublished():
                break
            await asyncio.sleep(0.1)
        assert queue.unpublished() == 0
        assert await waiting(prefix, queue_name(prefix, "m")) == 2
    finally:
        await queue.close()


async def test_a_consumer_started_before_the_broker_is_reachable_waits_for_it(
        prefix: str, caplog: pytest.LogCaptureFixture) -> None:
    consumer = RabbitQueue("amqp://guest:guest@127.0.0.1:1/", prefix=prefix)
    publisher = RabbitQueue(URL, prefix=prefix)
    try:
        get = asyncio.ensure_future(consumer.get("m"))
        for _ in range(300):  # until its first attempt has failed
            if any("cannot consume m yet" in r.getMessage() for r in caplog.records):
                break
            await asyncio.sleep(0.05)
        assert not get.done()
        consumer.url = URL  # reachable now
        await publisher.put(QueuedJob("job-5", "m"))
        delivery = await asyncio.wait_for(get, 30)
        assert delivery.job.id == "job-5"
        await delivery.ack()
    finally:
        await consumer.close()
        await publisher.close()


async def test_grouped_acks_cover_only_the_jobs_that_are_done(prefix: str) -> None:
    """Acknowledgements due together go as one ``multiple`` ack where no open message lies
    between them, and never cover a message still running: after the consumer goes away, the
    broker hands out again exactly the jobs that were not acknowledged."""
    publisher = RabbitQueue(URL, prefix=prefix)
    consumer = RabbitQueue(URL, prefix=prefix, prefetch=lambda _m: 6)
    try:
        for i in range(1, 7):
            await publisher.put(QueuedJob(f"job-{i}", "m"))
        got = {}
        for _ in range(6):
            delivery = await asyncio.wait_for(consumer.get("m"), 30)
            assert isinstance(delivery, RabbitDelivery)
            got[delivery.job.id] = delivery
        acks = got["job-1"].acks

        async def sent(frames: int) -> None:
            for _ in range(1500):  # until they are sent (30 s at most)
                if acks.sent == frames and not acks.done:
                    return
                await asyncio.sleep(0.02)
            raise AssertionError(f"{acks.sent} ack frames sent, {frames} expected")

        for i in (2, 3, 5):  # job-1 still runs: each by itself
            await got[f"job-{i}"].ack()
        await sent(3)
        for i in (1, 4):  # 1 to 5 are done now: one ack up to job-4 (2 and 3 are settled)
            await got[f"job-{i}"].ack()
        await sent(4)
        assert acks.open == {got["job-6"].message.delivery_tag}
        await consumer.close()  # job-6 was never acknowledged: it goes back to the queue
        consumer = RabbitQueue(URL, prefix=prefix, prefetch=lambda _m: 6)
        again = await asyncio.wait_for(consumer.get("m"), 30)
        assert again.job.id == "job-6"
        await again.ack()
        for _ in range(1500):  # until the broker has it (30 s at most)
            if await waiting(prefix, queue_name(prefix, "m")) == 0 and not again.acks.open:
                break
            await asyncio.sleep(0.02)
        assert await waiting(prefix, queue_name(prefix, "m")) == 0
        assert consumer.depth("m") == 0  # nothing else came back
    finally:
        await consumer.close()
        await publisher.close()


async def received(consumer: RabbitQueue, model: str, count: int) -> list[RabbitDelivery]:
    deliveries = []
    for _ in range(count):
        delivery = await asyncio.wait_for(consumer.get(model), 30)
        assert isinstance(delivery, RabbitDelivery)
        deliveries.append(delivery)
    return deliveries


async def until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    for _ in range(1500):  # 30 s at most
        if await check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"never happened: {what}")


async def test_ids_put_together_share_one_message_acked_after_its_last_job(
        prefix: str) -> None:
    """With ``group``, the ids put in one turn of the event loop for a model and priority go
    as one message; it is acknowledged only once every job in it is, so a consumer that goes
    away with one job open leaves the whole message for the next (whose claims skip the jobs
    already finished)."""
    publisher = RabbitQueue(URL, prefix=prefix, group=8)
    try:
        jobs = [QueuedJob(f"g-{i}", "m") for i in range(10)] + [QueuedJob("high", "m", 3)]
        assert await asyncio.gather(*(publisher.put(job) for job in jobs)) == [True] * 11
        # 8 + 2 ids of priority 0 and the one of priority 3: three messages, all confirmed
        assert await waiting(prefix, queue_name(prefix, "m")) == 3
    finally:
        await publisher.close()
    consumer = RabbitQueue(URL, prefix=prefix, prefetch=lambda _m: 3)
    try:
        got = await received(consumer, "m", 11)
        assert got[0].job == QueuedJob("high", "m", 3)  # its message comes first
        assert sorted(d.job.id for d in got[1:]) == sorted(f"g-{i}" for i in range(10))
        assert len({d.message.delivery_tag for d in got}) == 3
        acks = got[0].acks
        open_job = next(d for d in got if d.shared is not None and d.shared.left == 8)
        for delivery in got:
            if delivery is not open_job:
                await delivery.ack()
                await delivery.ack()  # twice: still counted once

        async def two_acked() -> bool:
            return acks.open == {open_job.message.delivery_tag} and not acks.done

        await until(two_acked, "the messages whose jobs are all done acknowledged")
        await consumer.close()
        consumer = RabbitQueue(URL, prefix=prefix, prefetch=lambda _m: 3)
        again = await received(consumer, "m", 8)  # the open job's whole message, redelivered
        assert open_job.job.id in {d.job.id for d in again}
        assert {d.message.delivery_tag for d in again} == {again[0].message.delivery_tag}
        for delivery in again:
            await delivery.ack()

        async def all_acked() -> bool:
            return not again[0].acks.open and not again[0].acks.done

        await until(all_acked, "the redelivered message acknowledged")
        assert consumer.depth("m") == 0
    finally:
        await consumer.close()
    assert await waiting(prefix, queue_name(prefix, "m")) == 0


async def test_a_shared_message_past_its_delivery_limit_fails_each_of_its_jobs(
        prefix: str) -> None:
    publisher = RabbitQueue(URL, prefix=prefix, group=8)
    await asyncio.gather(*(publisher.put(QueuedJob(f"d-{i}", "m")) for i in range(3)))
    await publisher.close()
    dead: list[str] = []
    consumer = RabbitQueue(URL, prefix=prefix, max_deliveries=1)
    try:
        assert len(await received(consumer, "m", 3)) == 3  # never acknowledged
    finally:
        await consumer.close()

    async def on_dead(job: QueuedJob, reason: str) -> None:
        assert "delivered 1 times" in reason
        dead.append(job.id)

    consumer = RabbitQueue(URL, prefix=prefix, max_deliveries=1, on_dead=on_dead)
    get = asyncio.ensure_future(consumer.get("m"))
    try:
        async def all_dead() -> bool:
            return len(dead) == 3

        await until(all_dead, "each job of the message failed")
        assert sorted(dead) == ["d-0", "d-1", "d-2"] and not get.done()
    finally:
        get.cancel()
        await consumer.close()
    assert await waiting(prefix, f"{prefix}.dead") == 1
    assert await waiting(prefix, queue_name(prefix, "m")) == 0
