"""The router: least-loaded picks with weights, retries, fallbacks, cooldowns and probes.

Replicas are real engines: the echo engine, and the ``http`` engine aimed at a loopback port
where nothing listens (a real refused connection).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from inferd.engines.echo import EchoEngine
from inferd.engines.http import HttpEngine
from inferd.engines.remote import RemoteSpec, UpstreamUnavailable
from inferd.errors import ModelNotFound, Unavailable
from inferd.routing.fairqueue import Priority
from inferd.routing.replica import Replica
from inferd.routing.router import Router
from inferd.schemas.openai import ChatCompletionRequest
from inferd.settings import ModelSpec
from tests.helpers import free_port


def echo_replica(rid: str, model: str = "m", weight: float = 1.0) -> Replica:
    return Replica(id=rid, model=model, engine=EchoEngine(ModelSpec(name=model, kind="echo")),
                   weight=weight)


@pytest.fixture
async def dead_engine() -> AsyncIterator[HttpEngine]:
    engine = HttpEngine("m", RemoteSpec(url=f"http://127.0.0.1:{free_port()}",
                                        connect_timeout=2.0))
    await engine.start()
    yield engine
    await engine.close()


def chat(model: str = "m", text: str = "hello world", **extra: object) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": model, "messages": [{"role": "user", "content": text}], **extra})


def test_pick_prefers_fewest_in_flight_per_weight_and_rotates_ties() -> None:
    router = Router()
    a, b = echo_replica("a"), echo_replica("b", weight=3.0)
    router.add(a)
    router.add(b)
    a.in_flight, b.in_flight = 1, 2  # scores: a (1+1)/1 = 2, b (2+1)/3 = 1
    assert {router.pick("m").id for _ in range(4)} == {"b"}
    a.in_flight = b.in_flight = 0
    assert {router.pick("m").id for _ in range(4)} == {"b"}  # 1 vs 1/3
    c = echo_replica("c", weight=3.0)
    router.add(c)
    assert {router.pick("m").id for _ in range(4)} == {"b", "c"}  # equal scores rotate


def test_aliases_and_unknown_models() -> None:
    router = Router()
    router.add(echo_replica("a"), aliases=["alias"])
    assert router.resolve("alias") == "m"
    with pytest.raises(ModelNotFound):
        router.pick("nope")


async def test_a_refused_connection_is_retried_on_another_replica(
        dead_engine: HttpEngine) -> None:
    router = Router(routing="least_busy")  # turns rotate: the dead replica's comes
    dead = Replica(id="dead", model="m", engine=dead_engine, kind="http")
    router.add(dead)
    router.add(echo_replica("live"))
    for _ in range(4):
        result = await router.chat(chat())
        assert result.choices[0].message.content == "hello world"
    assert not dead.healthy and dead.failures == 1
    assert dead.last_error is not None and "could not be reached" in dead.last_error
    assert dead.cooldown_until > 0
    assert dead.in_flight == 0
    assert router.replica("live") is not None


async def test_fallback_model_answers_when_every_replica_fails(
        dead_engine: HttpEngine) -> None:
    router = Router()
    router.add(Replica(id="dead", model="m", engine=dead_engine, kind="http"))
    router.add(echo_replica("backup", model="small"))
    router.set_model("m", fallbacks=["small"])
    result = await router.chat(chat())
    assert result.model == "small"
    assert result.choices[0].message.content == "hello world"
    # without a fallback the caller gets the upstream failure (502), not a hang
    router.set_model("m", fallbacks=[])
    router.replicas()[0].cooldown_until = 0  # allow a half-open try
    with pytest.raises(UpstreamUnavailable):
        await router.chat(chat())


class Metered:
    """What a metering caller hands the router: it learns which replica served."""

    flow = "key"
    flow_name = ""
    flow_weight: float | None = None
    group = ""
    group_weight: float | None = None
    priority: Priority = "interactive"

    def __init__(self) -> None:
        self.replica: str | None = None

    def may_use(self, model: str) -> bool:
        return True


async def test_the_caller_learns_the_replica_that_answered(dead_engine: HttpEngine) -> None:
    router = Router()
    router.add(Replica(id="dead", model="m", engine=dead_engine, kind="http"))
    router.add(echo_replica("backup", model="small"))
    router.set_model("m", fallbacks=["small"])
    placed = Metered()
    await router.chat(chat(), placed)  # "dead" is tried first and fails, then the fallback
    assert placed.replica == "backup"
    streamed = Metered()
    stream = await router.chat_stream(chat(stream=True), streamed)
    async for _ in stream:
        pass
    assert streamed.replica == "backup"


async def test_stream_errors_before_the_first_chunk_are_retried(
        dead_engine: HttpEngine) -> None:
    router = Router()
    router.add(Replica(id="dead", model="m", engine=dead_engine, kind="http"))
    router.add(echo_replica("live"))
    for _ in range(2):
        stream = await router.chat_stream(chat(stream=True))
        text = "".join([c["choices"][0]["delta"].get("content", "")
                        async for c in stream if c["choices"]])
        assert text == "hello world"
    assert all(r.in_flight == 0 for r in router.replicas())


def test_cooldown_grows_with_failures_and_a_probe_brings_the_replica_back() -> None:
    replica = echo_replica("r")
    replica.cooldown_base, replica.cooldown_max = 1.0, 5.0
    replica.record_failure("boom", now=100.0)
    assert replica.cooldown_until == 101.0
    replica.record_failure("boom", now=100.0)
    assert replica.cooldown_until == 102.0
    replica.record_failure("boom", now=100.0)
    replica.record_failure("boom", now=100.0)
    assert replica.cooldown_until == 105.0  # capped
    replica.record_probe(True, now=104.0)
    assert not replica.healthy  # still cooling down
    replica.record_probe(True, now=105.0)
    assert replica.healthy and replica.available(105.0)
    replica.record_success(0.01)
    assert replica.failures == 0
    state = replica.state()
    assert state["healthy"] and state["latency_ms"] == 10.0


async def test_no_available_replica_is_503() -> None:
    router = Router()
    replica = echo_replica("r")
    router.add(replica)
    replica.record_failure("down")
    with pytest.raises(Unavailable):
        await router.chat(chat())
    await asyncio.sleep(0)


def test_a_standby_is_picked_only_when_nothing_else_can_answer() -> None:
    router = Router()
    standby, worker = echo_replica("standby"), echo_replica("worker")
    standby.standby = True
    router.add(standby)
    router.add(worker)
    worker.in_flight = 50  # busy, still preferred over a request held for a worker
    assert {router.pick("m").id for _ in range(4)} == {"worker"}
    worker.record_failure("down")
    assert router.pick("m").id == "standby"
