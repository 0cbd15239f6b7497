"""Fixtures shared by the integration tests."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from inferd.auth.limits import Gate, Limiter, LocalLimiter
from inferd.auth.redis_limits import RedisLimiter
from tests.helpers import require_service

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def alerted() -> list[Gate]:
    """The gates of the money budgets whose alert the ``limiter`` gave, in order."""
    return []


@pytest.fixture(params=["local", "redis"])
async def limiter(request: pytest.FixtureRequest,
                  alerted: list[Gate]) -> AsyncIterator[Limiter]:
    """The process's own limiter, then one on the real Redis (its keys removed after); the
    alerts they give are put in ``alerted``."""
    if request.param == "local":
        local = LocalLimiter(alerted.append)
        yield local
        await local.close()
        return
    require_service("redis")
    prefix = f"inferd-test-{uuid.uuid4().hex[:8]}"
    shared = RedisLimiter(REDIS_URL, prefix=prefix, on_alert=alerted.append)
    yield shared
    names = [k async for k in shared.redis.scan_iter(match=f"{prefix}:*")]
    if names:
        await shared.redis.delete(*names)
    await shared.close()
