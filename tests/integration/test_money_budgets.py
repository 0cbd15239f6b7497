"""Money budgets at the key, user and team levels, in this process and through Redis: a
request reserves its worst case cost at every level or at none, settles to its real cost, is
refused with ``insufficient_quota`` when a level's spend and open reservations leave no room
for its worst case, gives the budget's alert once per period (and its first refusal in a
period as ``budget.exhausted``), and a seeded counter stands."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from inferd.auth.limits import (
    NANOS,
    BudgetEvent,
    Limiter,
    LocalLimiter,
    nanos,
    period_bounds,
)
from inferd.auth.principal import LimitLevel, Principal
from inferd.auth.redis_limits import RedisLimiter
from inferd.errors import RateLimited
from tests.helpers import require_service, wait_for_async

REDIS_URL = "redis://127.0.0.1:6379/0"


async def spent(limiter: Limiter, key_id: str, start: float | None) -> int:
    if isinstance(limiter, RedisLimiter):
        return await limiter.money_spent(key_id, start)
    assert isinstance(limiter, LocalLimiter)
    return limiter.money_spent(key_id)


def _team(budget: float, period: str | None = "month", alert: int = 80) -> LimitLevel:
    return LimitLevel("team", 7, f"team-7-{uuid.uuid4().hex[:6]}", "search",
                      max_budget=budget, budget_period=period,  # type: ignore[arg-type]
                      budget_alert=alert)


async def test_a_request_reserves_its_worst_case_and_settles_to_its_real_cost(
        limiter: Limiter) -> None:
    team = _team(1.0)
    key = Principal(key_id="1", scope="user", levels=(team,))
    start = period_bounds("month", time.time())[0]
    first = await limiter.acquire(key, 10, nanos(0.6))
    with pytest.raises(RateLimited) as refused:  # 0.6 reserved + 0.5 would pass 1.0
        await limiter.acquire(key, 10, nanos(0.5))
    assert refused.value.status == 429
    assert refused.value.code == "insufficient_quota"
    assert "Budget of 1 for the team 'search' is used up" in refused.value.message
    end = period_bounds("month", time.time())[1]
    assert end is not None and refused.value.retry_after is not None
    assert 0 < refused.value.retry_after <= end - time.time() + 1
    limiter.settle(first, 10, nanos(0.25))  # it cost 0.25: 0.75 is free again

    async def settled() -> bool:
        return await spent(limiter, team.limit_id, start) == nanos(0.25)

    await wait_for_async(settled, what="the settled cost")
    await limiter.acquire(key, 10, nanos(0.75))  # exactly the rest fits
    with pytest.raises(RateLimited):
        await limiter.acquire(key, 1, 1)  # not one nano more


async def test_every_level_or_none(limiter: Limiter) -> None:
    team = _team(1.0)
    user = LimitLevel("user", 9, f"user-9-{uuid.uuid4().hex[:6]}", "ann", max_budget=10.0)
    key = Principal(key_id="2", scope="user", max_budget=0.5, levels=(user, team))
    start = period_bounds("month", time.time())[0]
    with pytest.raises(RateLimited) as refused:  # the key's own budget holds it back
        await limiter.acquire(key, 1, nanos(0.6))
    assert "this API key" in refused.value.message
    assert await spent(limiter, team.limit_id, start) == 0  # nothing taken anywhere
    assert await spent(limiter, user.limit_id, 0.0) == 0
    await limiter.acquire(key, 1, nanos(0.5))
    assert await spent(limiter, team.limit_id, start) == nanos(0.5)
    assert await spent(limiter, key.limit_key, 0.0) == nanos(0.5)
    assert await spent(limiter, user.limit_id, 0.0) == nanos(0.5)


async def test_the_alert_is_given_once_per_period(limiter: Limiter,
                                                   budget_events: list[BudgetEvent]) -> None:
    team = _team(1.0, alert=50)
    key = Principal(key_id="3", scope="user", levels=(team,))
    start = period_bounds("month", time.time())[0]
    below = await limiter.acquire(key, 1, nanos(0.4))
    assert below.alerts == ()
    crossing = await limiter.acquire(key, 1, nanos(0.1))  # reaches 50%
    assert [gate.key for gate in crossing.alerts] == [team.limit_id]
    assert crossing.alerts[0].level == "team"
    again = await limiter.acquire(key, 1, nanos(0.1))
    assert again.alerts == ()  # once per period
    limiter.settle(again, 1, nanos(0.3))  # a settled cost past the alert: given already
    await limiter.close()  # (the Redis limiter sends the settled costs first)
    assert [event.gate for event in budget_events] == list(crossing.alerts)
    event = budget_events[0]
    assert (event.type, event.spend, event.period_start) == ("budget.alert", nanos(0.5), start)
    assert (event.gate.owner_id, event.gate.owner_name) == (7, "search")


async def test_a_settled_cost_that_reaches_the_alert_gives_it(
        limiter: Limiter, budget_events: list[BudgetEvent]) -> None:
    """A request reserved below the alert whose real cost takes the spend to it gives the
    alert, once; a settled cost below the reserved one does not."""
    team = _team(1.0, alert=50)
    key = Principal(key_id="4", scope="user", levels=(team,))
    start = period_bounds("month", time.time())[0]
    cheaper = await limiter.acquire(key, 1, nanos(0.45))
    limiter.settle(cheaper, 1, nanos(0.05))  # cost less than reserved: far from 50%
    first = await limiter.acquire(key, 1, 0)
    second = await limiter.acquire(key, 1, 0)
    assert (cheaper.alerts, first.alerts, second.alerts) == ((), (), ())
    limiter.settle(first, 1, nanos(0.3))  # 0.35: below
    limiter.settle(second, 1, nanos(0.25))  # 0.6: past 50%

    async def settled() -> bool:
        return await spent(limiter, team.limit_id, start) == nanos(0.6)

    async def given() -> bool:
        return bool(budget_events)

    await wait_for_async(settled, what="the settled costs")
    await wait_for_async(given, what="the alert")
    third = await limiter.acquire(key, 1, 0)
    limiter.settle(third, 1, nanos(0.1))  # once per period
    await limiter.close()
    assert [(e.type, e.gate.key, e.gate.level, e.spend, e.period_start)
            for e in budget_events] == [("budget.alert", team.limit_id, "team", nanos(0.6),
                                         start)]


async def test_two_gateways_give_a_settled_alert_once() -> None:
    """Costs settled on two gateways that together reach a shared budget's alert: one of
    them gives it."""
    require_service("redis")
    prefix = f"inferd-test-{uuid.uuid4().hex[:8]}"
    alerts: list[list[BudgetEvent]] = [[], []]
    gateways = [RedisLimiter(REDIS_URL, prefix=prefix, on_budget=alerts[i].append)
                for i in range(2)]
    team = _team(10.0, alert=80)
    keys = [Principal(key_id=str(20 + i), scope="user", levels=(team,)) for i in range(2)]
    try:
        reservations = [await gateways[i % 2].acquire(keys[i % 2], 1, 0) for i in range(40)]
        for i, reservation in enumerate(reservations):  # 40 x 0.25: past 8.0 at the 32nd
            gateways[i % 2].settle(reservation, 1, nanos(0.25))
        for gateway in gateways:
            await gateway.close()  # each sends its settled costs first
        assert len(alerts[0]) + len(alerts[1]) == 1
        start = period_bounds("month", time.time())[0]
        assert await gateways[0].money_spent(team.limit_id, start) == nanos(10.0)
    finally:
        names = [k async for k in gateways[0].redis.scan_iter(match=f"{prefix}:*")]
        if names:
            await gateways[0].redis.delete(*names)
        for gateway in gateways:
            await gateway.close()


async def test_periods_count_apart() -> None:
    """A budget's spend counts from the start of its period: the counter of another period
    (the day before) does not count."""
    limiter = LocalLimiter()
    key = Principal(key_id="5", scope="user", max_budget=1.0, budget_period="day")
    today = period_bounds("day", time.time())[0]
    await limiter.seed_money(key.limit_key, today - 86400, nanos(1.0))  # yesterday: all spent
    await limiter.acquire(key, 1, nanos(1.0))  # today is fresh
    week_start, week_end = period_bounds("week", time.time())
    assert week_end is not None and week_end - week_start == 7 * 86400
    assert time.gmtime(week_start).tm_wday == 0  # ISO weeks start on Monday
    assert period_bounds(None, time.time()) == (0.0, None)  # total: one period, no end
    await limiter.close()


async def test_a_seeded_spend_stands_and_counts(limiter: Limiter) -> None:
    key = Principal(key_id="6", scope="user", max_budget=2.0, budget_period="week")
    start = period_bounds("week", time.time())[0]
    await limiter.seed_money(key.limit_key, start, nanos(1.5))
    await limiter.seed_money(key.limit_key, start, nanos(0.1))  # already counted: stands
    with pytest.raises(RateLimited):
        await limiter.acquire(key, 1, nanos(0.6))
    await limiter.acquire(key, 1, nanos(0.5))
    assert await spent(limiter, key.limit_key, start) == 2 * NANOS


async def test_two_gateways_never_pass_a_shared_budget() -> None:
    require_service("redis")
    prefix = f"inferd-test-{uuid.uuid4().hex[:8]}"
    gateways = [RedisLimiter(REDIS_URL, prefix=prefix) for _ in range(2)]
    team = _team(5.0, period=None)
    keys = [Principal(key_id=str(10 + i), scope="user", levels=(team,)) for i in range(2)]

    async def attempt(i: int) -> bool:
        try:
            await gateways[i % 2].acquire(keys[i % 2], 1, nanos(0.1))
        except RateLimited:
            return False
        return True

    try:
        results = await asyncio.gather(*(attempt(i) for i in range(200)))
        assert sum(results) == 50
        assert await gateways[0].money_spent(team.limit_id, 0.0) == nanos(5.0)
    finally:
        names = [k async for k in gateways[0].redis.scan_iter(match=f"{prefix}:*")]
        if names:
            await gateways[0].redis.delete(*names)
        for gateway in gateways:
            await gateway.close()


async def test_the_first_refusal_in_a_period_gives_budget_exhausted(
        limiter: Limiter, budget_events: list[BudgetEvent]) -> None:
    """A money budget that refuses a request gives ``budget.exhausted`` once per period, with
    the spend (and open reservations) it refused at; a refusal by another limit does not."""
    user = LimitLevel("user", 9, f"user-9-{uuid.uuid4().hex[:6]}", "ann", rpm=1000,
                      max_budget=1.0, budget_period="day", budget_alert=100)
    key = Principal(key_id="30", scope="user", name="ci", max_budget=5.0, levels=(user,))
    start = period_bounds("day", time.time())[0]
    await limiter.acquire(key, 1, nanos(0.7))
    for _ in range(3):
        with pytest.raises(RateLimited) as refused:
            await limiter.acquire(key, 1, nanos(0.4))
        assert refused.value.code == "insufficient_quota"
    await limiter.acquire(key, 1, nanos(0.3))  # exactly the rest: the alert at 100%
    assert [(e.type, e.gate.level, e.gate.owner_id, e.gate.owner_name, e.spend, e.period_start)
            for e in budget_events] == [
        ("budget.exhausted", "user", 9, "ann", nanos(0.7), start),
        ("budget.alert", "user", 9, "ann", nanos(1.0), start)]


async def test_two_gateways_give_budget_exhausted_once() -> None:
    """Refusals by a budget shared through Redis on two gateways: one of them gives
    ``budget.exhausted``, of the key's own budget (a total one: no period)."""
    require_service("redis")
    prefix = f"inferd-test-{uuid.uuid4().hex[:8]}"
    events: list[list[BudgetEvent]] = [[], []]
    gateways = [RedisLimiter(REDIS_URL, prefix=prefix, on_budget=events[i].append)
                for i in range(2)]
    key = Principal(key_id="31", scope="user", name="shared", max_budget=1.0,
                    budget_alert=100)
    try:
        await gateways[0].acquire(key, 1, nanos(0.9))
        refusals = await asyncio.gather(*(gateways[i % 2].acquire(key, 1, nanos(0.2))
                                          for i in range(20)), return_exceptions=True)
        assert all(isinstance(r, RateLimited) for r in refusals)
        given = events[0] + events[1]
        assert [(e.type, e.gate.level, e.gate.owner_id, e.spend, e.period_start)
                for e in given] == [("budget.exhausted", "key", 31, nanos(0.9), 0.0)]
    finally:
        names = [k async for k in gateways[0].redis.scan_iter(match=f"{prefix}:*")]
        if names:
            await gateways[0].redis.delete(*names)
        for gateway in gateways:
            await gateway.close()
