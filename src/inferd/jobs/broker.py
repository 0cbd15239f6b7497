"""The RabbitMQ job queue: job ids on durable per-model queues, for gateways and workers in
separate processes.

- Publishing: persistent messages on a channel with publisher confirms; ``put`` returns once the
  broker has the message. When the broker cannot be reached the job row is already committed,
  so ``put`` keeps the id and publishes it again in the background (and the cluster's sweep
  republishes pending jobs): an outage delays jobs, it never loses one.
- Consuming: manual acknowledgement after the outcome is committed, prefetch = the worker's
  concurrency for that model, so unacknowledged work goes back to the queue when a worker dies.
  The acknowledgements due at the same moment (a group of outcomes committed together) go as
  one ``basic.ack`` with ``multiple`` where no message still running lies between them
  (``Acks``): never earlier, never for a message whose outcome is not committed.
- Redelivery limit: a message redelivered after a crash is republished with a delivery count;
  past ``max_deliveries`` it is rejected to the dead-letter exchange (``<prefix>.dead``) and
  ``on_dead`` fails the job with the reason.
- Priorities: ``x-max-priority`` queues; a job's priority (0 by default) maps to the middle.
- Groups (``group`` > 1): the ids published in the same turn of the event loop for one model
  and priority (a gateway's group commit hands them over together) share one message, up to
  ``group`` ids: one publish, one confirm and one acknowledgement for all of them. The message
  is acknowledged when every job in it is stored; a worker then holds up to prefetch x group
  jobs, so groups suit short jobs (a worker that takes a group runs all of it).
- Reconnects by itself (``connect_robust``): queues and consumers are declared again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import aio_pika
import orjson
from aio_pika.abc import (
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustChannel,
    AbstractRobustConnection,
)

from inferd.jobs.acks import Acks
from inferd.jobs.queue import DeadHandler, Delivery, QueuedJob
from inferd.jsontypes import JsonValue
from inferd.tasks import bounded, cancel_and_wait

log = logging.getLogger("inferd.jobs.broker")

MAX_PRIORITY = 10
DELIVERIES_HEADER = "x-inferd-deliveries"


def queue_name(prefix: str, model: str) -> str:
    """The durable queue that carries one model's job ids."""
    return f"{prefix}.jobs.{model}"


def broker_priority(priority: int) -> int:
    """A job priority (0 = normal, higher first) on RabbitMQ's 0..MAX_PRIORITY scale."""
    return max(0, min(MAX_PRIORITY, priority + MAX_PRIORITY // 2))


class _Shared:
    """A message that carries several job ids: acknowledged when the last of them is."""

    def __init__(self, count: int) -> None:
        self.left = count


@dataclass
class RabbitDelivery:
    """One job id received from RabbitMQ; acknowledged once its outcome is stored."""

    job: QueuedJob
    message: AbstractIncomingMessage
    acks: Acks
    shared: _Shared | None = None  # the message carries other job ids too
    _settled: bool = False

    async def ack(self) -> None:
        # After a reconnect the old channel is gone: the broker redelivers the message and the
        # next claim finds the job finished, so nothing is stored twice.
        if self._settled:
            return
        self._settled = True
        if self.shared is not None:
            self.shared.left -= 1
            if self.shared.left:
                return  # the message's other jobs are still open
        self.acks.ack(self.message.delivery_tag)


def _deliveries(message: AbstractIncomingMessage) -> int:
    """How often a message's jobs were delivered before this delivery."""
    return int(str((message.headers or {}).get(DELIVERIES_HEADER, 1)))


def _jobs_of(body: bytes) -> list[QueuedJob]:
    """The job ids of a message: ``{"id": ...}`` (one) or ``{"ids": [...]}`` (a group)."""
    data: JsonValue = orjson.loads(body)
    if not isinstance(data, dict):
        raise TypeError("a job message must be a JSON object")
    model, priority = str(data["model"]), data.get("priority", 0)
    if not isinstance(priority, int | float | str):
        raise TypeError("priority must be a number")
    ids = data["ids"] if "ids" in data else [data["id"]]
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        raise ValueError("ids must be a non-empty list of strings")
    return [QueuedJob(str(job_id), model, int(priority)) for job_id in ids]


class RabbitQueue:
    """``JobQueue`` on RabbitMQ (aio-pika)."""

    durable = True

    def __init__(self, url: str, *, prefix: str = "inferd", prefetch: Callable[[str], int] =
                 lambda _model: 1, max_deliveries: int = 5, publish_timeout: float = 5.0,
                 republish_seconds: float = 30.0, group: int = 1,
                 on_dead: DeadHandler | None = None) -> None:
        self.url, self.prefix, self.prefetch, self.group = url, prefix, prefetch, group
        self.max_deliveries, self.publish_timeout = max_deliveries, publish_timeout
        self.republish_seconds = republish_seconds
        self.on_dead = on_dead
        self._connection: AbstractRobustConnection | None = None
        self._publisher: AbstractRobustChannel | None = None
        self._declared: set[str] = set()
        self._consumers: dict[str, asyncio.Queue[RabbitDelivery]] = {}
        self._channels: list[AbstractRobustChannel] = []
        self._starting: list[asyncio.Task[None]] = []
        self._recent: dict[str, float] = {}  # job id -> when this process published it
        self._unpublished: dict[str, QueuedJob] = {}
        # (model, priority) -> the group being formed: its jobs, with the futures of all but
        # the first (the first publishes the group and tells the others)
        self._forming: dict[tuple[str, int], list[tuple[QueuedJob,
                                                         asyncio.Future[None] | None]]] = {}
        self._retry: asyncio.Task[None] | None = None
        self._down_until = 0.0  # monotonic time until which publishing is not tried
        self._lock = asyncio.Lock()

    @property
    def dead_letter_exchange(self) -> str:
        return f"{self.prefix}.dead"

    # -- connection -------------------------------------------------------------------------
    async def connect(self) -> None:
        """Connect and declare the dead-letter exchange and queue (idempotent)."""
        async with self._lock:
            if self._connection is not None:
                return
            # reconnect every second (the default waits 5 s) so an outage ends sooner
            connection = await aio_pika.connect_robust(self.url, timeout=10,
                                                       reconnect_interval=1)
            try:
                self._publisher = await connection.channel(publisher_confirms=True,
                                                           on_return_raises=True)
                dead = await self._publisher.declare_exchange(
                    self.dead_letter_exchange, aio_pika.ExchangeType.FANOUT, durable=True)
                dead_queue = await self._publisher.declare_queue(self.dead_letter_exchange,
                                                                 durable=True)
                await dead_queue.bind(dead)
            except BaseException:
                await connection.close()
                raise
            self._connection = connection

    async def _queue(self, channel: AbstractRobustChannel, model: str) -> AbstractQueue:
        # Every declaration must carry the same arguments, or RabbitMQ refuses it.
        return await channel.declare_queue(
            queue_name(self.prefix, model), durable=True,
            arguments={"x-max-priority": MAX_PRIORITY,
                       "x-dead-letter-exchange": self.dead_letter_exchange})

    # -- publish ----------------------------------------------------------------------------
    async def put(self, job: QueuedJob) -> bool:
        """Publish a job id and wait for the broker's confirm (True); on failure keep it to
        retry (False)."""
        now = time.monotonic()
        if now - self._recent.get(job.id, -1e9) < self.republish_seconds:
            return False  # published lately (a sweep finding it pending again)
        if len(self._recent) > 100_000:
            self._recent = {k: t for k, t in self._recent.items()
                            if now - t < self.republish_seconds}
        if now < self._down_until:
            self._keep(job)  # the broker failed a moment ago: do not wait for it again
            return False
        try:
            async with asyncio.timeout(self.publish_timeout):  # no task per publish
                if self.group > 1:
                    await self._publish_grouped(job)
                else:
                    await self._publish([job], 1)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # broker down or slow: the row is committed; retry later
            if time.monotonic() >= self._down_until:
                log.warning("could not publish job %s (%s); keeping job ids to publish "
                            "when the broker is back", job.id, exc)
            self._down_until = time.monotonic() + 1.0
            self._keep(job)
            return False
        self._recent[job.id] = now
        self._unpublished.pop(job.id, None)
        return True

    def _keep(self, job: QueuedJob) -> None:
        self._unpublished[job.id] = job
        if self._retry is None or self._retry.done():
            self._retry = asyncio.create_task(self._retry_forever(), name="broker:retry")

    async def _publish_grouped(self, job: QueuedJob) -> None:
        """Publish ``job`` in one message with the other ids put in this turn of the event
        loop for the same model and priority; returns once the broker confirmed it."""
        key = (job.model, job.priority)
        forming = self._forming.get(key)
        if forming is not None and len(forming) < self.group:
            joined: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            forming.append((job, joined))
            await joined
            return
        forming = self._forming[key] = [(job, None)]
        try:
            try:
                await asyncio.sleep(0)  # the puts resumed in this turn join the group
            finally:
                if self._forming.get(key) is forming:
                    del self._forming[key]
            await self._publish([queued for queued, _ in forming], 1)
        except BaseException as exc:
            for _, other in forming[1:]:
                if other is not None and not other.done():  # each keeps its id to retry
                    other.set_exception(ConnectionError(f"publishing a group failed: {exc!r}"))
            raise
        for _, other in forming[1:]:
            if other is not None and not other.done():
                other.set_result(None)

    async def _publish(self, jobs: list[QueuedJob], deliveries: int) -> None:
        """One message with the ids of ``jobs`` (one model, one priority)."""
        await self.connect()
        assert self._publisher is not None
        job = jobs[0]
        if job.model not in self._declared:
            await self._queue(self._publisher, job.model)
            self._declared.add(job.model)
        ids: dict[str, str | list[str]] = (
            {"id": job.id} if len(jobs) == 1  # as read by older workers
            else {"ids": [queued.id for queued in jobs]})
        body = orjson.dumps({**ids, "model": job.model, "priority": job.priority})
        message = aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                                   priority=broker_priority(job.priority), message_id=job.id,
                                   content_type="application/json",
                                   headers={DELIVERIES_HEADER: deliveries})
        await self._publisher.default_exchange.publish(
            message, routing_key=queue_name(self.prefix, job.model), mandatory=True)

    async def _retry_forever(self) -> None:
        while self._unpublished:
            await asyncio.sleep(1.0)
            self._down_until = 0.0
            for job in list(self._unpublished.values()):
                await self.put(job)
                if job.id in self._unpublished:
                    break  # still down; wait for the next round

    def unpublished(self) -> int:
        """Accepted jobs whose id has not reached the broker yet."""
        return len(self._unpublished)

    # -- consume ----------------------------------------------------------------------------
    async def get(self, model: str) -> Delivery:
        """The next job id of ``model`` (a consumer starts on the first call)."""
        inbox = self._consumers.get(model)
        if inbox is None:
            inbox = self._consumers[model] = asyncio.Queue()
            self._starting.append(asyncio.create_task(self._consume_when_up(model, inbox)))
        return await inbox.get()

    async def _consume_when_up(self, model: str, inbox: asyncio.Queue[RabbitDelivery]) -> None:
        """Start consuming, however long the broker takes to be reachable."""
        while True:
            try:
                await self._consume(model, inbox)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # not reachable yet: the worker waits for it
                log.warning("cannot consume %s yet (%s); retrying", model, exc)
                await asyncio.sleep(1.0)

    async def _consume(self, model: str, inbox: asyncio.Queue[RabbitDelivery]) -> None:
        await self.connect()
        assert self._connection is not None
        channel = await self._connection.channel()
        self._channels.append(channel)
        await channel.set_qos(prefetch_count=max(1, self.prefetch(model)))
        queue = await self._queue(channel, model)

        acks: dict[int, Acks] = {}  # per aiormq channel (a new one after each reconnect)

        async def received(message: AbstractIncomingMessage) -> None:
            key = id(message.channel)
            if key not in acks:
                for old in [k for k, a in acks.items() if a.channel.is_closed]:
                    del acks[old]
                acks[key] = Acks(message.channel)
            acks[key].delivered(message.delivery_tag)  # open until settled, whatever follows
            deliveries = await self._receive(message, acks[key])
            for delivery in deliveries:
                inbox.put_nowait(delivery)
            if not deliveries:  # rejected, or acknowledged after its copy was published
                acks[key].settled(message.delivery_tag)

        await queue.consume(received, no_ack=False)

    async def _receive(self, message: AbstractIncomingMessage,
                       acks: Acks) -> list[RabbitDelivery]:
        try:
            jobs = _jobs_of(message.body)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            log.error("dropping a malformed job message to %s", self.dead_letter_exchange)
            await message.reject(requeue=False)
            return []
        if not message.redelivered:
            shared = _Shared(len(jobs)) if len(jobs) > 1 else None
            return [RabbitDelivery(job, message, acks, shared) for job in jobs]
        count = _deliveries(message) + 1
        if count > self.max_deliveries:
            await message.reject(requeue=False)  # to the dead-letter queue, for inspection
            if self.on_dead is not None:
                for job in jobs:  # one already finished is left as it is (on_dead checks)
                    await self.on_dead(job, f"The job's message was delivered {count - 1} "
                                            "times without finishing (its workers stopped).")
            return []
        # RabbitMQ's classic queues do not count deliveries: carry the count in a copy.
        await self._publish(jobs, count)
        await message.ack()
        return []

    def depth(self, model: str | None = None) -> int:
        """Job ids received by this process and not yet taken by a worker loop."""
        if model is not None:
            inbox = self._consumers.get(model)
            return inbox.qsize() if inbox is not None else 0
        return sum(q.qsize() for q in self._consumers.values())

    async def close(self) -> None:
        await cancel_and_wait([t for t in (self._retry, *self._starting) if t is not None],
                              what="broker tasks")
        if self._connection is not None:  # a broker that is away must not hold us
            await bounded(self._connection.close(), 5, "closing the broker connection")
        self._connection = None
