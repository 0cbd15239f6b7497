"""The in-process limiter: exact under concurrency, token reservations settled, budgets."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from inferd.auth.limits import LocalLimiter, period_bounds
from inferd.auth.principal import Principal
from inferd.errors import RateLimited
from tests.helpers import wait_for_async


async def test_100_parallel_requests_against_10_rpm_let_exactly_10_through() -> None:
    """100 requests all in flight at once (each waits for the others before its check, and
    an admitted one is still running while the rest are checked): exactly 10 get through."""
    limiter = LocalLimiter()
    key = Principal(key_id="1", scope="user", rpm=10)
    go = asyncio.Event()
    waiting = 0

    async def request() -> bool:
        nonlocal waiting
        waiting += 1
        await go.wait()
        try:
            await limiter.acquire(key, 1)
        except RateLimited:
            return False
        await asyncio.sleep(0)  # the admitted request's work: others run meanwhile
        return True

    tasks = [asyncio.create_task(request()) for _ in range(100)]

    async def all_waiting() -> bool:
        return waiting == 100

    await wait_for_async(all_waiting, within=30, what="100 requests in flight")
    go.set()
    assert sum(await asyncio.gather(*tasks)) == 10


def test_acquire_checks_and_reserves_in_one_step() -> None:
    """``acquire`` never suspends: no other request can run between its check and its update
    (what makes the limiter exact under concurrency in one event loop)."""
    limiter = LocalLimiter()
    key = Principal(key_id="1", scope="user", rpm=1, tpm=100)
    for tokens in (10, 10):  # admitted, then refused
        step = limiter.acquire(key, tokens)
        with pytest.raises((StopIteration, RateLimited)):
            step.send(None)
        step.close()


async def test_refused_request_says_when_to_retry() -> None:
    limiter = LocalLimiter()
    key = Principal(key_id="1", scope="user", rpm=2)
    await limiter.acquire(key, 1)
    await limiter.acquire(key, 1)
    with pytest.raises(RateLimited) as info:
        await limiter.acquire(key, 1)
    assert info.value.status == 429
    assert 25 < info.value.retry_after <= 30  # one request per 30 s refills


async def test_keys_are_limited_separately() -> None:
    limiter = LocalLimiter()
    a = Principal(key_id="a", scope="user", rpm=1)
    b = Principal(key_id="b", scope="user", rpm=1)
    await limiter.acquire(a, 1)
    await limiter.acquire(b, 1)
    with pytest.raises(RateLimited):
        await limiter.acquire(a, 1)


async def test_tokens_per_minute_reserve_then_settle_with_real_usage() -> None:
    limiter = LocalLimiter()
    key = Principal(key_id="1", scope="user", tpm=1000)
    first = await limiter.acquire(key, 600)
    with pytest.raises(RateLimited) as info:
        await limiter.acquire(key, 600)  # 400 left < 600 asked
    assert "tokens per minute" in info.value.message
    limiter.settle(first, 100)  # it used only 100: 500 come back
    second = await limiter.acquire(key, 600)
    limiter.settle(second, 900)  # it used more than reserved: a debt
    with pytest.raises(RateLimited):
        await limiter.acquire(key, 1)


async def test_budget_counts_real_tokens_and_refuses_when_used_up() -> None:
    limiter = LocalLimiter()
    key = Principal(key_id="1", scope="user", token_budget=100)
    r = await limiter.acquire(key, 80)
    limiter.settle(r, 30)
    assert limiter.budget_used("1") == 30
    r = await limiter.acquire(key, 70)
    limiter.settle(r, 70)
    with pytest.raises(RateLimited) as info:
        await limiter.acquire(key, 1)
    assert info.value.code == "insufficient_quota"


async def test_budget_seeded_from_stored_usage() -> None:
    limiter = LocalLimiter()
    key = Principal(key_id="7", scope="user", token_budget=100, budget_period="day")
    start, _ = period_bounds("day", datetime.now(UTC).timestamp())
    await limiter.seed_budget("7", start, 95)
    with pytest.raises(RateLimited):
        await limiter.acquire(key, 10)
    await limiter.acquire(key, 5)


def test_period_bounds() -> None:
    now = datetime(2025, 3, 13, 15, 30, tzinfo=UTC).timestamp()  # a Thursday
    assert period_bounds(None, now) == (0.0, None)
    day = period_bounds("day", now)
    assert day == (datetime(2025, 3, 13, tzinfo=UTC).timestamp(),
                   datetime(2025, 3, 14, tzinfo=UTC).timestamp())
    assert period_bounds("week", now)[0] == datetime(2025, 3, 10, tzinfo=UTC).timestamp()
    assert period_bounds("month", now) == (datetime(2025, 3, 1, tzinfo=UTC).timestamp(),
                                           datetime(2025, 4, 1, tzinfo=UTC).timestamp())
