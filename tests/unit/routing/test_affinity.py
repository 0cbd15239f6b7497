"""Prefix-aware routing: routing keys, the rendezvous ranking, bounded loads, and the three
routing modes of the router (echo engines as replicas)."""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass

from inferd.engines.echo import EchoEngine
from inferd.routing import affinity
from inferd.routing.affinity import PREFIX_CHARS, bounded, digest, rank, routing_key
from inferd.routing.fairqueue import Admission, Priority
from inferd.routing.replica import Replica
from inferd.routing.router import Router
from inferd.schemas.openai import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from inferd.settings import ModelSpec


@dataclass
class Slot:
    id: str
    weight: float = 1.0
    in_flight: int = 0


def conversation(system: str, *turns: str, **extra: object) -> ChatCompletionRequest:
    messages = [{"role": "system", "content": system}]
    for i, text in enumerate(turns):
        messages.append({"role": "user" if i % 2 == 0 else "assistant", "content": text})
    return ChatCompletionRequest.model_validate({"model": "m", "messages": messages, **extra})


def keys(n: int) -> list[int]:
    return [digest(f"conversation {i}") for i in range(n)]


# -- routing keys -----------------------------------------------------------------------------
def test_every_turn_of_a_conversation_has_the_key_of_its_first() -> None:
    first = conversation("You are a pirate.", "Hello")
    later = conversation(
        "You are a pirate.", "Hello", "Arr!", "Where is the gold?", "Here.", "Thanks"
    )
    assert routing_key(first) == routing_key(later)
    assert routing_key(first) != routing_key(conversation("You are a pirate.", "Good day"))
    assert routing_key(first) != routing_key(conversation("You are a cat.", "Hello"))


def test_a_long_system_prompt_makes_the_key_alone_and_the_key_is_bounded() -> None:
    system = "rules " * PREFIX_CHARS
    a = routing_key(conversation(system, "one"))
    b = routing_key(conversation(system, "two"))
    assert a == b
    assert a is not None and len(a) <= PREFIX_CHARS + 2


def test_explicit_sessions_override_the_prefix_and_user() -> None:
    plain = conversation("sys", "hi")
    by_user = conversation("sys", "hi", user="alice")
    by_session = conversation("sys", "hi", user="alice", session_id="s-1")
    assert routing_key(by_user) == "u\0alice"
    assert routing_key(by_session) == "s\0s-1"
    assert len({routing_key(plain), routing_key(by_user), routing_key(by_session)}) == 3
    header = conversation("sys", "hi", user="alice", session_id="s-1")
    header._route = affinity.session_key("from-header")
    assert routing_key(header) == "s\0from-header"
    # the same session in the header and in the body is one key
    assert routing_key(header) == routing_key(conversation("other", "x", session_id="from-header"))


def test_completion_prompts_and_requests_without_a_key() -> None:
    prompt = "Once upon a time " * 400
    a = CompletionRequest.model_validate({"model": "m", "prompt": prompt})
    b = CompletionRequest.model_validate({"model": "m", "prompt": prompt + " the end"})
    ids = CompletionRequest.model_validate({"model": "m", "prompt": [1, 2, 3]})
    assert routing_key(a) == routing_key(b)
    assert routing_key(ids) == "t\x001,2,3"
    assert routing_key(EmbeddingRequest.model_validate({"model": "m", "input": "x"})) is None


# -- the ranking ------------------------------------------------------------------------------
def test_the_same_key_ranks_replicas_alike_whatever_their_order() -> None:
    replicas = [Slot("r1"), Slot("r2"), Slot("r3")]
    for key in keys(50):
        assert [r.id for r in rank(key, replicas)] == [r.id for r in rank(key, replicas[::-1])]


def test_keys_spread_over_replicas_by_weight() -> None:
    even = Counter(rank(k, [Slot("a"), Slot("b")])[0].id for k in keys(2000))
    assert 800 < even["a"] < 1200
    heavy = Counter(rank(k, [Slot("a", 3.0), Slot("b")])[0].id for k in keys(2000))
    assert 1300 < heavy["a"] < 1700  # three quarters


def test_a_replica_leaving_moves_only_its_keys_and_joining_takes_only_keys() -> None:
    three = [Slot("a"), Slot("b"), Slot("c")]
    before = {k: rank(k, three)[0].id for k in keys(600)}
    two = [Slot("a"), Slot("c")]
    after = {k: rank(k, two)[0].id for k in keys(600)}
    moved = {k for k in before if before[k] != after[k]}
    assert moved == {k for k in before if before[k] == "b"}  # b's keys, and only those
    assert 100 < len(moved) < 300
    four = [*three, Slot("d")]
    joined = {k: rank(k, four)[0].id for k in keys(600)}
    assert all(joined[k] in (before[k], "d") for k in before)


def test_a_replica_past_its_bound_spills_to_the_next_in_the_ranking() -> None:
    a, b, c = Slot("a"), Slot("b"), Slot("c")
    replicas = [a, b, c]
    key = next(k for k in keys(100) if rank(k, replicas)[0] is a)
    second = rank(key, replicas)[1]
    assert bounded(key, replicas, 0.25) is a
    a.in_flight = 2  # m = 2: a's bound is ceil(1.25 * 3 / 3) = 2, and a would make 3
    assert bounded(key, replicas, 0.25) is second
    second.in_flight = 2  # m = 4: bound ceil(1.25 * 5 / 3) = 3: a fits again
    assert bounded(key, replicas, 0.25) is a
    a.in_flight, second.in_flight = 3, 1  # m = 4: a would make 4 > 3; the second fits
    assert bounded(key, replicas, 0.25) is second


def test_the_slack_keeps_a_few_requests_at_home() -> None:
    a, b = Slot("a"), Slot("b")
    key = next(k for k in keys(100) if rank(k, [a, b])[0] is a)
    a.in_flight = 3  # m = 3: a's bound is ceil(1.25 * 4 / 2) = 3, + 2 of slack: 5
    assert bounded(key, [a, b], 0.25, slack=2) is a
    assert bounded(key, [a, b], 0.25, slack=0) is b
    a.in_flight = 5  # m = 5: ceil(1.25 * 6 / 2) + 2 = 6, and a would make 6
    assert bounded(key, [a, b], 0.25, slack=2) is a
    a.in_flight = 9  # m = 9: ceil(1.25 * 10 / 2) + 2 = 9: spills
    assert bounded(key, [a, b], 0.25, slack=2) is b


def test_the_choice_is_the_first_of_the_ranking_within_its_bound() -> None:
    """``bounded`` (which scores the replicas inline and sorts only on a spill) takes what its
    definition says: the first replica of ``rank`` whose load stays within its bound."""
    rng = random.Random(7)
    for _ in range(3000):
        replicas = [Slot(f"r{i}-{rng.random():.6f}", rng.choice([0.5, 1.0, 2.0, 3.0]),
                         rng.randint(0, 12)) for i in range(rng.randint(1, 6))]
        key = rng.getrandbits(64)
        spill, slack = rng.choice([0.0, 0.25, 1.0]), rng.randint(0, 3)
        total = sum(r.in_flight for r in replicas) + 1
        weight = sum(r.weight for r in replicas)
        within = [r for r in rank(key, replicas) if r.in_flight + 1
                  <= math.ceil((1 + spill) * total * r.weight / weight) + slack]
        assert bounded(key, replicas, spill, slack) is within[0]


def test_a_bound_always_leaves_a_replica() -> None:
    replicas = [Slot("a", in_flight=5), Slot("b", in_flight=5), Slot("c", weight=2.0)]
    for key in keys(40):
        chosen = bounded(key, replicas, 0.0)
        assert chosen.in_flight + 1 <= -(-11 * chosen.weight // 4)


# -- the router's modes -----------------------------------------------------------------------
def echo(rid: str, weight: float = 1.0) -> Replica:
    return Replica(
        id=rid, model="m", engine=EchoEngine(ModelSpec(name="m", kind="echo")), weight=weight
    )


class Placement:
    replica: str | None = None
    flow = "key"
    flow_name = ""
    flow_weight: float | None = None
    group = ""
    group_weight: float | None = None
    priority: Priority = "interactive"

    def may_use(self, model: str) -> bool:
        return True


async def served_by(router: Router, request: ChatCompletionRequest) -> str | None:
    placed = Placement()
    await router.chat(request, placed)
    return placed.replica


async def test_prefix_routing_keeps_each_conversation_on_one_replica() -> None:
    router = Router(routing="prefix")
    for rid in ("r1", "r2", "r3"):
        router.add(echo(rid))
    homes: dict[int, str | None] = {}
    for turn in range(3):
        for c in range(12):
            request = conversation(f"system prompt {c}", "hi", "hello", *["more"] * turn)
            served = await served_by(router, request)
            assert homes.setdefault(c, served) == served
    assert len(set(homes.values())) > 1  # and the conversations spread


async def test_two_routers_with_replicas_listed_differently_agree() -> None:
    one, two = Router(routing="prefix"), Router(routing="prefix")
    for rid in ("r1", "r2", "r3"):
        one.add(echo(rid))
    for rid in ("r3", "r1", "r2"):
        two.add(echo(rid))
    for c in range(20):
        request = conversation(f"system {c}", "hi")
        assert await served_by(one, request) == await served_by(two, request)


async def test_a_failing_replica_sends_its_keys_to_the_next_in_the_ranking() -> None:
    router = Router(routing="prefix")
    for rid in ("r1", "r2", "r3"):
        router.add(echo(rid))
    request = conversation("sys", "hi", session_id="s")
    home = await served_by(router, request)
    ranking = [r.id for r in rank(digest("s\0s"), router.entry("m").replicas)]
    assert home == ranking[0]
    replica = router.replica(ranking[0])
    assert replica is not None
    replica.record_failure("down")
    assert await served_by(router, request) == ranking[1]


async def test_weighted_routing_takes_turns_by_weight_whatever_the_load() -> None:
    router = Router(routing="least_busy")
    a, b = echo("a", 2.0), echo("b")
    router.add(a)
    router.add(b)
    router.set_model("m", routing="weighted")
    b.in_flight = 5
    picks = [router.pick("m").id for _ in range(6)]
    assert Counter(picks) == {"a": 4, "b": 2}
    assert picks[:3] in (["a", "b", "a"], ["a", "a", "b"])


async def test_least_busy_ignores_the_key_and_the_model_setting_wins() -> None:
    router = Router(routing="prefix")
    a, b = echo("a"), echo("b")
    router.add(a)
    router.add(b)
    router.set_model("m", routing="least_busy")
    assert router.routing_of("m") == "least_busy"
    key = digest("k")
    preferred = rank(key, [a, b])[0]
    preferred.in_flight = 1
    assert router.pick("m", key=key) is not preferred
    router.set_model("m", routing=None)  # back to the router's default
    assert router.routing_of("m") == "prefix"
    assert router.pick("m", key=key) is preferred


async def test_requests_other_than_chats_and_completions_go_to_the_least_busy() -> None:
    router = Router(routing="prefix")
    a, b = echo("a"), echo("b")
    router.add(a)
    router.add(b)
    request = EmbeddingRequest.model_validate({"model": "m", "input": "x", "user": "alice"})
    ranking = rank(digest("u\0alice"), [a, b])
    ranking[0].in_flight = 1  # its first choice by the user is busier: not taken
    seen: list[str] = []

    async def call(replica: Replica, _request: EmbeddingRequest, _admission: Admission) -> str:
        seen.append(replica.id)
        return replica.id

    assert await router._run(request, call, None) == ranking[1].id
    assert seen == [ranking[1].id]
