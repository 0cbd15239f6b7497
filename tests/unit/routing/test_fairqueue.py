"""The gateway's fair queue: order across keys by weight and virtual time, priority classes,
the bound, the timeout and callers that leave (``inferd.routing.fairqueue``)."""

from __future__ import annotations

import asyncio

import pytest

from inferd.errors import Overloaded
from inferd.metrics import Metrics
from inferd.routing.fairqueue import Admission, FairQueue, Priority, Queueing
from tests.helpers import wait_for_async


class Pool:
    """Replicas of model "m" with ``capacity`` slots; records the order requests start in."""

    def __init__(self, capacity: int, config: Queueing | None = None,
                 metrics: Metrics | None = None) -> None:
        self.capacity = capacity
        self.running = 0
        self.order: list[str] = []
        self.admitted: list[Admission] = []
        self.queue = FairQueue(config or Queueing(), self.room, metrics)

    def room(self, model: str) -> float | None:
        assert model == "m"
        return float(self.capacity - self.running)

    async def request(self, flow: str, priority: Priority = "interactive",
                      name: str = "") -> Admission:
        admission = await self.queue.admit("m", flow, name, priority)
        self.running += 1  # started on a replica before the next await
        self.order.append(flow)
        self.admitted.append(admission)
        return admission

    def end_one(self) -> None:
        """The oldest running request ends."""
        self.running -= 1
        self.admitted.pop(0).close()

    async def queued(self, depth: int) -> None:
        async def reached() -> bool:
            return self.queue.depth("m") == depth

        await wait_for_async(reached, what=f"{depth} requests waiting")

    async def started(self, count: int) -> None:
        async def reached() -> bool:
            return len(self.order) == count

        await wait_for_async(reached, what=f"{count} requests started")

    async def drain(self, count: int) -> None:
        """End requests one at a time until ``count`` have started."""
        while len(self.order) < count:
            before = len(self.order)
            self.end_one()
            await self.started(before + 1)


async def test_a_key_that_starts_waiting_goes_before_another_keys_backlog() -> None:
    pool = Pool(1)
    await pool.request("noisy")  # room: admitted at once
    backlog = [asyncio.create_task(pool.request("noisy")) for _ in range(4)]
    await pool.queued(4)
    quiet = asyncio.create_task(pool.request("quiet"))
    await pool.queued(5)
    await pool.drain(6)
    assert pool.order == ["noisy", "quiet", "noisy", "noisy", "noisy", "noisy"]
    await asyncio.gather(quiet, *backlog)


async def test_the_quiet_key_is_served_next_each_time_it_sends() -> None:
    pool = Pool(1)
    await pool.request("noisy")
    backlog = [asyncio.create_task(pool.request("noisy")) for _ in range(10)]
    await pool.queued(10)
    for turn in range(3):
        quiet = asyncio.create_task(pool.request("quiet"))
        await pool.queued(10 - turn + 1)
        await pool.drain(len(pool.order) + 1)
        assert pool.order[-1] == "quiet"
        await quiet
        await pool.drain(len(pool.order) + 1)  # the quiet request's own turn ends
        assert pool.order[-1] == "noisy"
    for task in backlog:
        task.cancel()
    await asyncio.gather(*backlog, return_exceptions=True)


async def test_keys_are_served_in_proportion_to_their_weights() -> None:
    pool = Pool(1, Queueing(weights={"heavy-id": 3.0, "light": 1.0}))
    await pool.request("other")
    heavy = [asyncio.create_task(pool.request("heavy-id")) for _ in range(8)]
    await pool.queued(8)
    light = [asyncio.create_task(pool.request("light-id", name="light")) for _ in range(8)]
    await pool.queued(16)
    await pool.drain(1 + 8)
    first = pool.order[1:9]
    assert first.count("heavy-id") == 6 and first.count("light-id") == 2
    # start tags: heavy 0, 1/3, 2/3, 1, 4/3...; light 0, 1, 2...; ties go to the earlier
    assert first == ["heavy-id", "light-id", "heavy-id", "heavy-id", "heavy-id", "light-id",
                     "heavy-id", "heavy-id"]
    for task in heavy + light:
        task.cancel()
    await asyncio.gather(*heavy, *light, return_exceptions=True)


async def test_weights_by_key_id_then_name_default_one() -> None:
    queue = FairQueue(Queueing(weights={"k1": 4.0, "team": 2.0}), lambda _: None)
    assert queue.weight("k1", "team") == 4.0
    assert queue.weight("k2", "team") == 2.0
    assert queue.weight("k3", "other") == 1.0
    assert queue.weight("", "") == 1.0


async def test_interactive_requests_go_before_batch_ones() -> None:
    pool = Pool(1)
    await pool.request("a")
    batch = [asyncio.create_task(pool.request("jobs", "batch")) for _ in range(2)]
    await pool.queued(2)
    interactive = asyncio.create_task(pool.request("b"))
    await pool.queued(3)
    assert pool.queue.depth("m", "batch") == 2 and pool.queue.depth("m", "interactive") == 1
    await pool.drain(4)
    assert pool.order == ["a", "b", "jobs", "jobs"]
    await asyncio.gather(interactive, *batch)


async def test_a_full_queue_refuses_at_once_with_a_retry_after() -> None:
    metrics = Metrics()
    pool = Pool(1, Queueing(max_depth=2), metrics)
    await pool.request("a")
    waiting = [asyncio.create_task(pool.request("a")) for _ in range(2)]
    await pool.queued(2)
    with pytest.raises(Overloaded) as refused:
        await pool.request("b")
    assert refused.value.status == 503 and refused.value.code == "queue_full"
    assert int(refused.value.retry_after_header) >= 1
    assert pool.queue.depth("m") == 2  # the refused request did not join
    text = metrics.render().decode()
    assert ('inferd_gateway_queue_refused_total{model="m",priority="interactive",'
            'reason="queue_full"} 1.0') in text
    assert 'inferd_gateway_queue_depth{model="m",priority="interactive"} 2.0' in text
    await pool.drain(3)
    await asyncio.gather(*waiting)


async def test_a_request_that_waits_past_its_timeout_leaves_with_503() -> None:
    metrics = Metrics()
    pool = Pool(1, Queueing(timeout=0.05, batch_timeout=0.05), metrics)
    await pool.request("a")
    for priority in ("interactive", "batch"):
        with pytest.raises(Overloaded) as late:
            await pool.request("b", priority)  # type: ignore[arg-type]
        assert late.value.status == 503 and late.value.code == "queue_timeout"
        assert late.value.retry_after_header == "1"
    assert pool.queue.depth("m") == 0
    text = metrics.render().decode()
    for priority in ("interactive", "batch"):
        assert (f'inferd_gateway_queue_refused_total{{model="m",priority="{priority}",'
                'reason="queue_timeout"} 1.0') in text
    # the wait of the request admitted at once is observed too (0 s)
    assert 'inferd_gateway_queue_wait_seconds_count{model="m",priority="interactive"} 1.0' in text
    pool.end_one()
    pool.queue.forget("m")  # the model is gone: its idle queue goes with it
    assert pool.queue._queues == {}


async def test_a_caller_that_leaves_leaves_the_queue() -> None:
    pool = Pool(1)
    await pool.request("a")
    leaving = asyncio.create_task(pool.request("b"))
    staying = asyncio.create_task(pool.request("c"))
    await pool.queued(2)
    leaving.cancel()
    await pool.queued(1)
    with pytest.raises(asyncio.CancelledError):
        await leaving
    await pool.drain(2)
    assert pool.order == ["a", "c"]
    await staying
    pool.end_one()  # "a" ended in drain, now "c"
    pool.queue.forget("m")  # idle: nothing waits or runs
    assert pool.queue._queues == {}


async def test_a_caller_that_leaves_once_admitted_hands_its_turn_on() -> None:
    pool = Pool(1)
    await pool.request("a")
    first = asyncio.create_task(pool.request("b"))
    second = asyncio.create_task(pool.request("c"))
    await pool.queued(2)
    pool.end_one()  # "b" is admitted...
    first.cancel()  # ...and its caller leaves before it resumes
    with pytest.raises(asyncio.CancelledError):
        await first
    await pool.started(2)
    assert pool.order == ["a", "c"]
    await second


async def test_nothing_waits_when_queueing_is_off_or_unbounded() -> None:
    off = Pool(0, Queueing(enabled=False))
    await off.request("a")
    await off.request("a")
    unbounded = FairQueue(Queueing(), lambda _: None)
    admission = await unbounded.admit("m", "a")
    admission.close()
    admission.close()  # closing twice is harmless
    assert unbounded._queues == {}
