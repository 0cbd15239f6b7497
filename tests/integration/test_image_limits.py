"""The images-per-minute limit (``ipm``): exact in one process and across gateways sharing
Redis; a request for several pictures takes that many from the bucket."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from inferd.auth.limits import Limiter, LocalLimiter
from inferd.auth.principal import Principal
from inferd.auth.redis_limits import RedisLimiter
from inferd.errors import RateLimited
from tests.helpers import require_service

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(params=["local", "redis"])
async def limiters(request: pytest.FixtureRequest) -> AsyncIterator[list[Limiter]]:
    """Two limiters that share their state: one local limiter twice, or two on one Redis."""
    if request.param == "local":
        local = LocalLimiter()
        yield [local, local]
        await local.close()
        return
    require_service("redis")
    prefix = f"inferd-test-{uuid.uuid4().hex[:8]}"
    pair = [RedisLimiter(REDIS_URL, prefix=prefix), RedisLimiter(REDIS_URL, prefix=prefix)]
    yield list(pair)
    names = [k async for k in pair[0].redis.scan_iter(match=f"{prefix}:*")]
    if names:
        await pair[0].redis.delete(*names)
    for limiter in pair:
        await limiter.close()


async def _took(limiter: Limiter, principal: Principal, count: int) -> bool:
    try:
        await limiter.acquire_images(principal, count)
    except RateLimited:
        return False
    return True


async def test_parallel_requests_get_exactly_the_images_per_minute(
        limiters: list[Limiter]) -> None:
    key = Principal(key_id=uuid.uuid4().hex, scope="user", ipm=12)
    results = await asyncio.gather(*(_took(limiters[i % 2], key, 2) for i in range(40)))
    assert sum(results) == 6  # 6 requests of 2 images fill 12 images per minute


async def test_refusal_names_the_limit_and_when_to_come_back(limiters: list[Limiter]) -> None:
    key = Principal(key_id=uuid.uuid4().hex, scope="user", ipm=2)
    await limiters[0].acquire_images(key, 2)
    with pytest.raises(RateLimited) as caught:
        await limiters[1].acquire_images(key, 1)
    assert "2 images per minute" in caught.value.message
    assert 0 < caught.value.retry_after <= 30  # one image comes back every 30 s


async def test_keys_without_ipm_are_not_counted(limiters: list[Limiter]) -> None:
    key = Principal(key_id=uuid.uuid4().hex, scope="user", rpm=1)
    assert all([await _took(limiters[0], key, 10) for _ in range(5)])


async def _units(limiter: Limiter, principal: Principal, units: int) -> bool:
    try:
        await limiter.acquire_image_units(principal, units)
    except RateLimited:
        return False
    return True


async def test_parallel_requests_get_exactly_the_image_units_per_minute(
        limiters: list[Limiter]) -> None:
    key = Principal(key_id=uuid.uuid4().hex, scope="user", upm=100)
    results = await asyncio.gather(*(_units(limiters[i % 2], key, 8) for i in range(40)))
    assert sum(results) == 12  # 12 requests of 8 units fit 100 units per minute


async def test_the_image_budget_is_exact_and_says_insufficient_quota(
        limiters: list[Limiter]) -> None:
    key = Principal(key_id=uuid.uuid4().hex, scope="user", image_budget=50,
                    budget_period="day")
    results = await asyncio.gather(*(_units(limiters[i % 2], key, 10) for i in range(20)))
    assert sum(results) == 5
    with pytest.raises(RateLimited) as caught:
        await limiters[0].acquire_image_units(key, 1)
    assert caught.value.code == "insufficient_quota"
    assert "50 image units" in caught.value.message


async def test_a_seeded_image_budget_starts_from_the_units_already_used(
        limiters: list[Limiter]) -> None:
    key = Principal(key_id=uuid.uuid4().hex, scope="user", image_budget=50)
    await limiters[0].seed_image_budget(key.limit_key, 0.0, 45)
    assert await _units(limiters[1], key, 5)
    assert not await _units(limiters[0], key, 1)


async def test_units_per_minute_refusal_names_the_limit(limiters: list[Limiter]) -> None:
    key = Principal(key_id=uuid.uuid4().hex, scope="user", upm=60)
    await limiters[0].acquire_image_units(key, 60)
    with pytest.raises(RateLimited) as caught:
        await limiters[1].acquire_image_units(key, 6)
    assert "60 image units" in caught.value.message
    assert 0 < caught.value.retry_after <= 6  # one unit comes back every second
