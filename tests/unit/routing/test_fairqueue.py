"""The gateway's fair queue: order across keys by weight and virtual time, priority classes,
the bound, the timeout and callers that leave (``inferd.routing.fairqueue``)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from inferd.engines.echo import EchoEngine
from inferd.errors import Overloaded
from inferd.metrics import Metrics
from inferd.routing.fairqueue import Admission, FairQueue, Priority, Queueing
from inferd.routing.replica import Replica
from inferd.routing.router import Router
from inferd.schemas.openai import ChatCompletionRequest
from inferd.settings import ModelSpec, check_capacity
from tests.helpers import wait_for_async


class Pool:
    """Replicas of model "m" with ``capacity`` slots and ``reserve`` beyond them; records
    the order requests start in."""

    def __init__(self, capacity: int, config: Queueing | None = None,
                 metrics: Metrics | None = None, reserve: int = 0) -> None:
        self.capacity = capacity
        self.reserve = reserve
        self.running = 0
        self.order: list[str] = []
        self.admitted: list[Admission] = []
        self.queue = FairQueue(config or Queueing(), self.room, metrics, spare=self.spare)

    def room(self, model: str) -> float | None:
        assert model == "m"
        return float(max(0, self.capacity - self.running))

    def spare(self, model: str) -> float | None:
        assert model == "m"
        return float(max(0, self.capacity + self.reserve - self.running))

    async def request(self, flow: str, priority: Priority = "interactive",
                      name: str = "", weight: float | None = None, team: str = "",
                      team_weight: float | None = None) -> Admission:
        admission = await self.queue.admit("m", flow, name, priority, weight, team,
                                           team_weight)
        self.running += 1  # started on a replica before the next await
        self.order.append(flow)
        self.admitted.append(admission)
        return admission

    def end_one(self) -> None:
        """The oldest running request ends."""
        self.running -= 1
        self.admitted.pop(0).close()

    def end(self, flow: str) -> None:
        """The oldest running request of ``flow`` ends."""
        self.running -= 1
        admission = next(a for a in self.admitted if a.flow == flow)
        self.admitted.remove(admission)
        admission.close()

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
    assert queue.weight("k1", "team", 0.5) == 0.5  # the key's own queue_weight first


async def _backlogs(pool: Pool, waiting: list[tuple[str, dict[str, Any]]],
                    each: int) -> list[asyncio.Task[Admission]]:
    """``each`` requests of every key of ``waiting`` (its flow and the ``request`` fields),
    queued key after key behind one running request."""
    await pool.request("first")
    tasks: list[asyncio.Task[Admission]] = []
    for flow, fields in waiting:
        tasks += [asyncio.create_task(pool.request(flow, **fields)) for _ in range(each)]
        await pool.queued(len(tasks))
    return tasks


async def _stop(tasks: list[asyncio.Task[Admission]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_teams_share_turns_by_team_then_keys_within_a_team() -> None:
    """Team t1 has three keys waiting, team t2 one: the teams take turns (t2's one key gets
    half of them), and t1's turns go round its keys."""
    pool = Pool(1)
    tasks = await _backlogs(pool, [("a1", {"team": "t1"}), ("a2", {"team": "t1"}),
                                   ("a3", {"team": "t1"}), ("b1", {"team": "t2"})], 4)
    await pool.drain(1 + 8)
    assert pool.order[1:9] == ["a1", "b1", "a2", "b1", "a3", "b1", "a1", "b1"]
    await _stop(tasks)


async def test_team_weights_and_key_weights_within_a_team() -> None:
    """Team t1 of weight 3 against team t2 of weight 1: three turns to one; within t1, key
    k1 of weight 2 gets two of every three of the team's turns."""
    pool = Pool(1)
    t1 = {"team": "t1", "team_weight": 3.0}
    tasks = await _backlogs(pool, [("k1", {**t1, "weight": 2.0}), ("k2", t1),
                                   ("b1", {"team": "t2", "team_weight": 1.0})], 8)
    await pool.drain(1 + 12)
    first = pool.order[1:13]
    assert first.count("b1") == 3  # a quarter of the turns
    mine = [flow for flow in first if flow != "b1"]
    assert mine.count("k1") == 6 and mine.count("k2") == 3
    await _stop(tasks)


async def test_a_key_of_no_team_is_a_group_of_its_own_with_its_weight() -> None:
    """A key of no team takes turns with a team as one group: with its own weight (2) against
    the team's (1), whatever the number of the team's keys; a key's own weight goes before
    the settings' ``queue_weights``."""
    pool = Pool(1, Queueing(weights={"solo": 9.0}))
    tasks = await _backlogs(pool, [("solo", {"weight": 2.0}), ("a1", {"team": "t1"}),
                                   ("a2", {"team": "t1"})], 6)
    await pool.drain(1 + 9)
    first = pool.order[1:10]
    assert first.count("solo") == 6 and first.count("a1") + first.count("a2") == 3
    await _stop(tasks)


async def test_a_team_that_starts_waiting_goes_before_another_teams_backlog() -> None:
    """As for keys: a team charged only for its requests running goes next."""
    pool = Pool(1)
    tasks = await _backlogs(pool, [("a1", {"team": "t1"}), ("a2", {"team": "t1"})], 4)
    quiet = asyncio.create_task(pool.request("b1", team="t2"))
    await pool.queued(9)
    await pool.drain(1 + 3)
    assert pool.order[1:4] == ["a1", "b1", "a2"]  # b1 second, of the nine waiting
    await _stop([*tasks, quiet])


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


# -- the router: capacity, room, and where an admitted request goes ---------------------------
def echo(rid: str, **fields: Any) -> Replica:
    return Replica(id=rid, model="m", engine=EchoEngine(ModelSpec(name="m", kind="echo")),
                   **fields)


def ask() -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "hello"}]})


class Caller:
    replica: str | None = None
    flow = "key-1"
    flow_name = "one"
    flow_weight: float | None = None
    group = ""
    group_weight: float | None = None
    priority: Priority = "interactive"

    def may_use(self, model: str) -> bool:
        return True


def test_capacity_of_a_replica_its_own_learned_or_the_routers() -> None:
    router = Router(capacity=8)
    own, default, auto = echo("own", capacity=2), echo("default"), echo("auto",
                                                                       learn_capacity=True)
    for replica in (own, default, auto):
        router.add(replica)
    assert router.limit(own) == 2 and router.limit(default) == 8
    assert router.limit(auto) is None  # nothing learned yet: no bound
    auto.record_load(running=3, waiting=2, kv_cache_usage=None)
    assert router.limit(auto) == 3  # running while others wait: the engine is full
    auto.record_load(running=2, waiting=0, kv_cache_usage=None)
    assert router.limit(auto) == 3  # fewer running, none waiting: it learns nothing
    assert Router().limit(default) is None  # no capacity anywhere: no bound


def test_room_counts_the_load_and_is_unbounded_without_a_capacity() -> None:
    router = Router()
    first, second = echo("a", capacity=2), echo("b", capacity=3)
    router.add(first)
    router.add(second)
    first.in_flight = 1
    assert router.room("m") == 4.0
    # a fresh load read counts the engine's running and waiting requests (one of them ours)...
    second.in_flight = 1
    second.record_load(running=2, waiting=1, kv_cache_usage=None)
    assert router.room("m") == 1.0 + 0.0
    # ...less this gateway's requests that ended since
    second.in_flight = 0
    assert router.room("m") == 1.0 + 1.0
    router.add(echo("c"))  # a replica without a capacity: no bound for the model
    assert router.room("m") is None


async def test_an_admitted_request_goes_to_the_replica_with_room() -> None:
    router = Router(routing="weighted", capacity=1)
    busy, free = echo("busy", weight=100.0), echo("free")
    router.add(busy)
    router.add(free)
    busy.in_flight = 1  # at capacity (weighted routing would pick it first)
    caller = Caller()
    await router.chat(ask(), caller)
    assert caller.replica == "free"


async def test_a_request_waits_while_every_replica_is_full_and_goes_when_one_has_room() -> None:
    router = Router(capacity=1)
    only = echo("only")
    router.add(only)
    only.in_flight = 1  # another request runs there
    waiting = asyncio.create_task(router.chat(ask(), Caller()))

    async def queued() -> bool:
        return router.queue.depth("m") == 1

    await wait_for_async(queued, what="the request waiting")
    assert not waiting.done()
    only.in_flight = 0  # it ended (the router wakes the queue when its own requests end)
    router.wake("m")
    answer = await waiting
    assert answer.choices[0].message.content
    assert router.queue.depth("m") == 0 and only.in_flight == 0


# -- the reserve: slots beyond the capacity for a team or key with nothing running ------------
async def test_a_key_with_nothing_running_goes_into_the_reserve_at_once() -> None:
    metrics = Metrics()
    pool = Pool(1, metrics=metrics, reserve=1)
    await pool.request("noisy")  # the capacity
    backlog = [asyncio.create_task(pool.request("noisy")) for _ in range(3)]
    await pool.queued(3)
    await pool.request("quiet")  # nothing running: the reserve, at once
    assert pool.order == ["noisy", "quiet"] and pool.queue.depth("m") == 3
    # its next request while the first runs is not let into the reserve: it waits its turn
    second = asyncio.create_task(pool.request("quiet"))
    await pool.queued(4)
    pool.end("quiet")  # the reserve is free, and the quiet key has nothing running again
    await pool.started(3)
    assert pool.order[-1] == "quiet" and pool.queue.depth("m") == 3
    await second
    # the noisy key never goes past its capacity: a free reserve slot is not for it
    pool.end("quiet")
    assert pool.queue.depth("m") == 3 and pool.running == 1
    text = metrics.render().decode()
    assert 'inferd_gateway_queue_reserve_total{model="m"} 2.0' in text
    await pool.drain(5)
    assert pool.order[3:] == ["noisy", "noisy"]
    for task in backlog:
        task.cancel()
    await asyncio.gather(*backlog, return_exceptions=True)


async def test_keys_with_nothing_running_take_the_reserve_in_turn() -> None:
    pool = Pool(1, reserve=1)
    await pool.request("noisy")
    backlog = [asyncio.create_task(pool.request("noisy")) for _ in range(3)]
    await pool.queued(3)
    await pool.request("q1")
    later = [asyncio.create_task(pool.request(flow)) for flow in ("q2", "q3")]
    await pool.queued(5)
    pool.end("q1")  # the reserve goes to the first of the others waiting, not the backlog
    await pool.started(3)
    assert pool.order[-1] == "q2"
    pool.end("q2")
    await pool.started(4)
    assert pool.order[-1] == "q3" and pool.queue.depth("m") == 3
    await asyncio.gather(*later)
    for task in backlog:
        task.cancel()
    await asyncio.gather(*backlog, return_exceptions=True)


async def test_batch_requests_never_use_the_reserve() -> None:
    pool = Pool(1, reserve=1)
    await pool.request("a")
    job = asyncio.create_task(pool.request("jobs", "batch"))
    await pool.queued(1)
    assert pool.order == ["a"]  # the reserve is free, but not for a job
    await pool.request("b")  # an interactive request of a key with nothing running takes it
    assert pool.order == ["a", "b"] and pool.queue.depth("m", "batch") == 1
    pool.end("b")
    assert pool.queue.depth("m", "batch") == 1
    pool.end("a")
    await job
    assert pool.order == ["a", "b", "jobs"]


async def test_a_key_of_a_team_with_requests_running_does_not_use_the_reserve() -> None:
    pool = Pool(1, reserve=1)
    await pool.request("crawler", team="search")
    teammate = asyncio.create_task(pool.request("ui", team="search"))
    await pool.queued(1)  # its team has a request running: it waits
    await pool.request("alone")  # a key of no team with nothing running: the reserve
    assert pool.order == ["crawler", "alone"]
    pool.end("crawler")
    await teammate
    assert pool.order == ["crawler", "alone", "ui"]


async def test_without_a_reserve_a_key_with_nothing_running_waits() -> None:
    pool = Pool(1)
    await pool.request("noisy")
    quiet = asyncio.create_task(pool.request("quiet"))
    await pool.queued(1)
    assert pool.order == ["noisy"]
    pool.end("noisy")
    await quiet


def test_spare_counts_each_replicas_reserve_beyond_its_capacity() -> None:
    router = Router()
    first, second = echo("a", capacity=2, reserve=1), echo("b", capacity=3)
    router.add(first)
    router.add(second)
    first.in_flight, second.in_flight = 3, 3
    assert router.room("m") == 0.0 and router.spare("m") == 0.0
    first.in_flight = 2
    assert router.room("m") == 0.0 and router.spare("m") == 1.0
    first.in_flight = 1
    assert router.room("m") == 1.0 and router.spare("m") == 2.0
    router.add(echo("c"))  # a replica without a capacity: no bound for the model
    assert router.spare("m") is None


async def test_a_request_let_into_a_reserve_goes_to_a_replica_with_reserve_room() -> None:
    router = Router(routing="weighted")
    without, spare = echo("without", capacity=1, weight=100.0), echo("spare", capacity=1,
                                                                      reserve=1)
    router.add(without)
    router.add(spare)
    without.in_flight = spare.in_flight = 1  # both at capacity
    caller = Caller()
    await router.chat(ask(), caller)  # a key with nothing running: let into the reserve
    assert caller.replica == "spare"


@pytest.mark.parametrize("reserve", [-1, True, 1.5, "1", 100_001])
def test_a_reserve_is_a_whole_number_from_0(reserve: Any) -> None:
    with pytest.raises(ValueError, match=r"options\.reserve must be a whole number"):
        check_capacity({"capacity": 4, "reserve": reserve})
    assert check_capacity({"capacity": 4, "reserve": 0}) == {"capacity": 4, "reserve": 0}
