"""``AuthThrottle``: a leaky bucket of failed authentications per client address, on a clock
the test moves."""

from __future__ import annotations

import pytest

from inferd.auth import throttle as throttle_module
from inferd.auth.throttle import AuthThrottle
from inferd.errors import RateLimited


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_limit_th_failure_throttles_until_one_drains() -> None:
    clock = Clock()
    throttle = AuthThrottle(3, 60.0, clock)  # one failure drains every 20 s
    for _ in range(3):
        throttle.check("10.0.0.1")
        throttle.failed("10.0.0.1")
    with pytest.raises(RateLimited) as info:
        throttle.check("10.0.0.1")
    assert info.value.code == "too_many_failed_authentications"
    assert info.value.retry_after == pytest.approx(20.0)
    throttle.check("10.0.0.2")  # another address is not affected
    throttle.check(None)  # nor a request without a known address
    clock.now += 19.0
    with pytest.raises(RateLimited) as info:
        throttle.check("10.0.0.1")
    assert info.value.retry_after == pytest.approx(1.0)
    clock.now += 1.0
    throttle.check("10.0.0.1")  # one failure has drained: one more try
    throttle.failed("10.0.0.1")
    with pytest.raises(RateLimited):
        throttle.check("10.0.0.1")


def test_a_zero_limit_never_throttles() -> None:
    throttle = AuthThrottle(0, 60.0)
    for _ in range(100):
        throttle.failed("10.0.0.1")
    throttle.check("10.0.0.1")


def test_memory_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(throttle_module, "MAX_ADDRESSES", 10)
    clock = Clock()
    throttle = AuthThrottle(2, 60.0, clock)
    throttle.failed("keep")
    throttle.failed("keep")
    for i in range(30):
        throttle.failed(f"10.0.0.{i}")
    assert len(throttle._buckets) <= 10
    # the oldest went first; the newest addresses are still counted
    assert "10.0.0.29" in throttle._buckets and "keep" not in throttle._buckets
