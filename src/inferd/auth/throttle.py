"""Failed-authentication throttling per client address.

Every refused key (missing, unknown, disabled, expired) adds one to its address's leaky bucket,
which drains ``limit`` failures per ``window`` seconds. While an address's bucket is full, its
requests that need a key get 429 without their key being looked at, so a throttled address
cannot go on testing keys (a valid key from that address waits too); other addresses are never
affected. The state is per process, in memory, and bounded: beyond ``MAX_ADDRESSES`` the
drained entries are dropped first, then the oldest.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from inferd.errors import RateLimited

MAX_ADDRESSES = 10_000


class AuthThrottle:
    """Counts failed authentications per client address; ``check`` refuses a full bucket."""

    def __init__(self, limit: int, window: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit  # 0: no throttling
        self.rate = limit / window if limit else 0.0  # failures drained per second
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # address -> (level, at)

    def _level(self, address: str, now: float) -> float:
        level, at = self._buckets.get(address, (0.0, now))
        return max(0.0, level - (now - at) * self.rate)

    def check(self, address: str | None) -> None:
        """Raise 429 when ``address`` has failed ``limit`` times within the window."""
        if not self.limit or address is None or address not in self._buckets:
            return
        level = self._level(address, self.clock())
        if level + 1 > self.limit:
            wait = (level + 1 - self.limit) / self.rate
            raise RateLimited(
                "Too many failed authentications from your address; try again in "
                f"{max(1, round(wait))} s.", retry_after=wait,
                code="too_many_failed_authentications")

    def failed(self, address: str | None) -> None:
        """Count one failed authentication from ``address``."""
        if not self.limit or address is None:
            return
        now = self.clock()
        level = self._level(address, now)
        self._buckets.pop(address, None)  # re-inserted last: the dict is oldest-first
        self._buckets[address] = (level + 1, now)
        if len(self._buckets) > MAX_ADDRESSES:
            self._prune(now)

    def _prune(self, now: float) -> None:
        drained = [a for a in self._buckets if self._level(a, now) == 0.0]
        for address in drained:
            del self._buckets[address]
        while len(self._buckets) > MAX_ADDRESSES:
            del self._buckets[next(iter(self._buckets))]
