"""Limits shared through the Redis on this machine: exact across several limiters."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from inferd.auth.principal import Principal
from inferd.auth.redis_limits import RedisLimiter
from inferd.errors import RateLimited
from tests.helpers import require_service, wait_for_async

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
async def limiters() -> AsyncIterator[list[RedisLimiter]]:
    """Two limiters (as two gateways would hold) on one Redis, with a fresh key prefix."""
    require_service("redis")
    prefix = f"inferd-test-{uuid.uuid4().hex[:8]}"
    pair = [RedisLimiter(REDIS_URL, prefix=prefix), RedisLimiter(REDIS_URL, prefix=prefix)]
    yield pair
    names = [k async for k in pair[0].redis.scan_iter(match=f"{prefix}:*")]
    if names:
        await pair[0].redis.delete(*names)
    for limiter in pair:
        await limiter.close()


async def _attempt(limiter: RedisLimiter, principal: Principal, tokens: int = 1) -> bool:
    try:
        await limiter.acquire(principal, tokens)
    except RateLimited:
        return False
    return True


async def redis_now(limiter: RedisLimiter) -> float:
    """Redis's clock, the one the limiter's script refills the buckets with."""
    seconds, micros = await limiter.redis.time()
    return float(seconds) + micros / 1_000_000


async def test_100_parallel_requests_over_two_gateways_let_exactly_10_through(
        limiters: list[RedisLimiter]) -> None:
    key = Principal(key_id="1", scope="user", rpm=10)
    began = await redis_now(limiters[0])
    results = await asyncio.gather(*(_attempt(limiters[i % 2], key) for i in range(100)))
    # The bucket refills one request every 6 s: on a busy machine the attempts may span that
    # (none is refilled on an idle one: exactly 10).
    refilled = int((await redis_now(limiters[0]) - began) * 10 / 60)
    assert 10 <= sum(results) <= 10 + refilled


async def test_refusal_has_retry_after(limiters: list[RedisLimiter]) -> None:
    key = Principal(key_id="2", scope="user", rpm=1)
    before = await redis_now(limiters[0])
    await limiters[0].acquire(key, 1)
    with pytest.raises(RateLimited) as info:
        await limiters[1].acquire(key, 1)
    # A minute after the first request, less the time between the two: at most the time from
    # before the first to after the refusal (milliseconds rounded up)
    waited = await redis_now(limiters[0]) - before
    assert 60 - waited <= info.value.retry_after <= 60


async def test_tokens_per_minute_settled_through_redis(limiters: list[RedisLimiter]) -> None:
    key = Principal(key_id="3", scope="user", tpm=1000)
    first = await limiters[0].acquire(key, 600)
    with pytest.raises(RateLimited):
        await limiters[1].acquire(key, 600)
    limiters[0].settle(first, 100)

    async def admitted() -> bool:  # the correction is sent in the background
        try:
            await limiters[1].acquire(key, 600)
        except RateLimited:
            return False
        return True

    await wait_for_async(admitted, within=30, what="the settled tokens reaching Redis")


async def test_budget_exact_and_seeded(limiters: list[RedisLimiter]) -> None:
    key = Principal(key_id="4", scope="user", token_budget=50, budget_period="month")
    from inferd.auth.limits import period_bounds

    start, _ = period_bounds("month", __import__("time").time())
    await limiters[0].seed_budget("4", start, 20)
    await limiters[1].seed_budget("4", start, 999)  # NX: the first seed stands
    results = await asyncio.gather(*(_attempt(limiters[i % 2], key, 1) for i in range(100)))
    assert sum(results) == 30
    assert await limiters[0].budget_used("4", start) == 50
    with pytest.raises(RateLimited) as info:
        await limiters[0].acquire(key, 1)
    assert info.value.code == "insufficient_quota"
