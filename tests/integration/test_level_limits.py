"""Limits at the key, user and team levels: a team's (or user's) counters are shared by all
its keys, and a request is reserved at every level or at none, in this process and through
Redis."""

from __future__ import annotations

import uuid

import pytest

from inferd.auth.limits import Limiter
from inferd.auth.principal import LimitLevel, Principal
from inferd.auth.redis_limits import RedisLimiter
from inferd.errors import RateLimited
from tests.helpers import wait_for_async


def _keys(team: LimitLevel) -> tuple[Principal, Principal]:
    a = Principal(key_id="1", scope="user", levels=(team,))
    b = Principal(key_id="2", scope="user", token_budget=5, levels=(team,))
    return a, b


async def test_a_team_budget_counts_every_key_and_reserves_all_or_nothing(
        limiter: Limiter) -> None:
    team = LimitLevel("team", 7, f"team-7-{uuid.uuid4().hex[:6]}", "search", token_budget=10)
    a, b = _keys(team)
    first = await limiter.acquire(a, 6)
    with pytest.raises(RateLimited) as own:  # the key's own budget: the team's is not taken
        await limiter.acquire(b, 6)
    assert "this API key" in own.value.message
    await limiter.acquire(b, 4)  # the team has 4 left
    with pytest.raises(RateLimited) as shared:
        await limiter.acquire(a, 1)
    assert shared.value.code == "insufficient_quota"
    assert "the team 'search'" in shared.value.message
    limiter.settle(first, 2)  # used 2 of the 6 reserved: the team has 4 again
    if isinstance(limiter, RedisLimiter):  # corrections are sent in the background
        redis = limiter

        async def settled() -> bool:
            return await redis.budget_used(team.limit_id, 0.0) == 6

        await wait_for_async(settled, what="the correction reaching Redis")
    await limiter.acquire(a, 4)
    with pytest.raises(RateLimited):
        await limiter.acquire(b, 1)


async def test_a_team_rate_spans_its_keys(limiter: Limiter) -> None:
    team = LimitLevel("team", 8, f"team-8-{uuid.uuid4().hex[:6]}", "ops", rpm=1)
    user = LimitLevel("user", 9, f"user-9-{uuid.uuid4().hex[:6]}", "ann", tpm=1000)
    a = Principal(key_id="3", scope="user", levels=(user, team))
    b = Principal(key_id="4", scope="user", rpm=100, levels=(team,))
    await limiter.acquire(a, 10)
    with pytest.raises(RateLimited) as refused:
        await limiter.acquire(b, 10)
    assert "1 requests per minute for the team 'ops'" in refused.value.message
    assert refused.value.retry_after is not None and refused.value.retry_after > 0


async def test_a_refusal_names_the_limit_that_holds_the_request_back_longest(
        limiter: Limiter) -> None:
    team = LimitLevel("team", 10, f"team-10-{uuid.uuid4().hex[:6]}", "ops", rpm=1)
    key = Principal(key_id="5", scope="user", tpm=1000, levels=(team,))
    await limiter.acquire(key, 1000)  # the key's tokens and the team's request, both used up
    with pytest.raises(RateLimited) as refused:
        await limiter.acquire(key, 10)  # 10 tokens come back in 0.6 s, a request in 60 s
    assert "for the team 'ops'" in refused.value.message
    assert refused.value.retry_after is not None and refused.value.retry_after > 30
