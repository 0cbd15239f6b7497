"""Fixtures shared by the integration tests."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from inferd.auth.limits import BudgetEvent, Limiter, LocalLimiter
from inferd.auth.redis_limits import RedisLimiter
from tests.helpers import require_service

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def budget_events() -> list[BudgetEvent]:
    """The money budgets' events (alerts, first refusals) the ``limiter`` gave, in order."""
    return []


@pytest.fixture(params=["local", "redis"])
async def limiter(request: pytest.FixtureRequest,
                  budget_events: list[BudgetEvent]) -> AsyncIterator[Limiter]:
    """The process's own limiter, then one on the real Redis (its keys removed after); the
    money budgets' events they give are put in ``budget_events``."""
    if request.param == "local":
        local = LocalLimiter(budget_events.append)
        yield local
        await local.close()
        return
    require_service("redis")
    prefix = f"inferd-test-{uuid.uuid4().hex[:8]}"
    shared = RedisLimiter(REDIS_URL, prefix=prefix, on_budget=budget_events.append)
    yield shared
    names = [k async for k in shared.redis.scan_iter(match=f"{prefix}:*")]
    if names:
        await shared.redis.delete(*names)
    await shared.close()
