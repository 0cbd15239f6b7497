"""What the user and team levels cost a request's limit check, in this process and in Redis.

    .venv/bin/python bench/level_limits.py                 # local and Redis, 20,000 requests
    .venv/bin/python bench/level_limits.py --requests 5000 --no-redis

For each limiter, the time of ``acquire`` + ``settle`` per request for a key with its own
requests/min, tokens/min and budget, and for the same key with a user and a team that set
theirs too (three levels, checked and reserved together: one Lua call in Redis); prints the
median of 5 rounds per request and the ratio of three levels to one. Then the same three
levels with a money budget at each (worst case cost reserved, real cost settled) against
without: the ratio of money budgets on to off.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid

import harness
from harness import ROOT

sys.path.insert(0, str(ROOT / "src"))

from inferd.auth.limits import Limiter, LocalLimiter
from inferd.auth.principal import LimitLevel, Principal
from inferd.auth.redis_limits import RedisLimiter

HUGE = 10**9  # no request is refused: the cost measured is the check and the reservation


def principals(money: float | None = None) -> tuple[Principal, Principal]:
    """A key with its own limits, and one with a user and a team besides (``money``: a
    money budget at every level)."""
    own = {"rpm": HUGE, "tpm": HUGE, "token_budget": HUGE, "budget_period": "day",
           "max_budget": money}
    tag = uuid.uuid4().hex[:8]
    levels = (LimitLevel("user", 1, f"user-1-{tag}", "ann", rpm=HUGE, tpm=HUGE,
                         token_budget=HUGE, budget_period="month", max_budget=money),
              LimitLevel("team", 2, f"team-2-{tag}", "search", rpm=HUGE, tpm=HUGE,
                         token_budget=HUGE, max_budget=money))
    key = Principal(key_id="1", scope="user", limit_id=f"1-{tag}", **own)  # type: ignore[arg-type]
    both = Principal(key_id="2", scope="user", limit_id=f"2-{tag}", levels=levels,
                     **own)  # type: ignore[arg-type]
    return key, both


async def per_request(limiter: Limiter, principal: Principal, count: int) -> float:
    """Microseconds per acquire + settle, median of 5 rounds (with a worst case cost of
    2000 nanos settled to 1800 when the principal has a money budget)."""
    worst, real = (2000, 1800) if principal.spends else (0, None)
    rounds = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(count):
            limiter.settle(await limiter.acquire(principal, 100, worst), 90, real)
        rounds.append((time.perf_counter() - started) / count * 1e6)
    return statistics.median(rounds)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--no-redis", action="store_true")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    limiters: list[tuple[str, Limiter, int]] = [("local", LocalLimiter(), args.requests)]
    if not args.no_redis:
        limiters.append(("redis", RedisLimiter(args.redis_url,
                                               prefix=f"bench-{uuid.uuid4().hex[:8]}"),
                         max(args.requests // 10, 100)))
    print(f"load average: {harness.load_average()}")
    print(f"{'limiter':8} {'requests':>9} {'key only (us)':>14} {'key+user+team (us)':>19} "
          f"{'ratio':>6}")
    results: list[tuple[str, int, float, float]] = []
    for name, limiter, count in limiters:
        key, both = principals()
        one = await per_request(limiter, key, count)
        three = await per_request(limiter, both, count)
        print(f"{name:8} {count:>9} {one:>14.1f} {three:>19.1f} {three / one:>6.2f}")
        _, paying = principals(money=float(HUGE))
        spending = await per_request(limiter, paying, count)
        results.append((name, count, three, spending))
        if isinstance(limiter, RedisLimiter):
            for principal in (key, both, paying):
                await limiter.reset(principal.limit_key)
            for level in both.levels + paying.levels:
                await limiter.reset(level.limit_id)
        await limiter.close()
    print(f"\n{'limiter':8} {'requests':>9} {'money off (us)':>15} {'money on (us)':>14} "
          f"{'ratio':>6}   (key+user+team)")
    for name, count, off, on in results:
        print(f"{name:8} {count:>9} {off:>15.1f} {on:>14.1f} {on / off:>6.2f}")


if __name__ == "__main__":
    asyncio.run(main())
