"""``RedisLimiter``: the limits of ``inferd.auth.limits`` shared by every gateway through Redis.

``acquire`` is one ``EVALSHA`` of a Lua script that refills the buckets of the key (and of its
user and team, ``inferd.auth.limits.gates``) with Redis's own clock, checks requests/min,
tokens/min and the token and money budgets, and reserves them all or nothing:
Redis runs a script atomically, so any number of gateways get exact limits. ``settle``
queues the token correction; a background task sends the queued corrections in one pipeline,
so a request never waits for it. A money budget's alert is marked in Redis (``SET NX`` on the
period's alert mark, by the reservation or the settled cost that reaches it), so one gateway
gives it, once per period; likewise the first refusal by a money budget in a period (its
exhausted mark, set by the script that refuses).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import redis.asyncio as aioredis

from inferd.auth.limits import (
    ALERT,
    EXHAUSTED,
    NO_PERIOD_RETRY_SECONDS,
    BudgetEvent,
    Gate,
    GateCache,
    OnBudget,
    Reservation,
    gate_limited,
    longest,
    no_event,
    own_start,
    period_bounds,
    rate_limited,
)
from inferd.auth.principal import Principal

log = logging.getLogger("inferd.limits")

# For each level (the key's, its user's, its team's): KEYS request bucket, token bucket, budget
# counter, money counter (nanos), money alert mark, money exhausted mark; ARGV rpm, tpm (0: no
# limit), budget (-1: none), budget ttl (0: none), money budget (-1: none), money alert (-1:
# none), after ARGV[1] the tokens and ARGV[2] the cost (nanos). Every level is checked before
# any is written: all are reserved, or none. Returns {1, then for each level whose money alert
# this reservation crossed first in the period: level, spend} when reserved, else {0, then for
# each limit met: wait in ms, reason 1=rpm 2=tpm 3=budget 4=money 5=money (its first refusal
# in the period), level, spend}.
ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local cost = tonumber(ARGV[1])
local money = tonumber(ARGV[2])
local function level(key, cap)
  local v = redis.call('HMGET', key, 'l', 's')
  local l, s = tonumber(v[1]), tonumber(v[2])
  if l == nil or s == nil then return cap end
  return math.min(cap, l + (now - s) * cap / 60)
end
local n = #KEYS / 6
local rls, tls = {}, {}
local refused = {0}
for i = 1, n do
  local k, a = (i - 1) * 6, 2 + (i - 1) * 6
  local rpm, tpm = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local budget, mbudget = tonumber(ARGV[a + 3]), tonumber(ARGV[a + 5])
  if rpm > 0 then
    rls[i] = level(KEYS[k + 1], rpm)
    if rls[i] < 1 then
      table.insert(refused, math.ceil((1 - rls[i]) * 60000 / rpm))
      table.insert(refused, 1)
      table.insert(refused, i)
      table.insert(refused, 0)
    end
  end
  if tpm > 0 then
    tls[i] = level(KEYS[k + 2], tpm)
    local need = math.min(cost, tpm)
    if tls[i] < need then
      table.insert(refused, math.ceil((need - tls[i]) * 60000 / tpm))
      table.insert(refused, 2)
      table.insert(refused, i)
      table.insert(refused, 0)
    end
  end
  if budget >= 0 then
    local used = tonumber(redis.call('GET', KEYS[k + 3]) or '0')
    if used + cost > budget then
      table.insert(refused, 0)
      table.insert(refused, 3)
      table.insert(refused, i)
      table.insert(refused, 0)
    end
  end
  if mbudget >= 0 then
    local spent = tonumber(redis.call('GET', KEYS[k + 4]) or '0')
    if spent + money > mbudget then
      local reason = 4
      if redis.call('SET', KEYS[k + 6], '1', 'NX') then
        local ttl = tonumber(ARGV[a + 4])
        if ttl > 0 then redis.call('EXPIRE', KEYS[k + 6], ttl) end
        reason = 5
      end
      table.insert(refused, 0)
      table.insert(refused, reason)
      table.insert(refused, i)
      table.insert(refused, spent)
    end
  end
end
if #refused > 1 then return refused end
local done = {1}
for i = 1, n do
  local k, a = (i - 1) * 6, 2 + (i - 1) * 6
  local rpm, tpm = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local budget, ttl = tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
  local mbudget, alert = tonumber(ARGV[a + 5]), tonumber(ARGV[a + 6])
  if budget >= 0 then
    redis.call('INCRBY', KEYS[k + 3], cost)
    if ttl > 0 then redis.call('EXPIRE', KEYS[k + 3], ttl) end
  end
  if mbudget >= 0 then
    local spent = redis.call('INCRBY', KEYS[k + 4], money)
    if ttl > 0 then redis.call('EXPIRE', KEYS[k + 4], ttl) end
    if alert >= 0 and spent >= alert and redis.call('SET', KEYS[k + 5], '1', 'NX') then
      if ttl > 0 then redis.call('EXPIRE', KEYS[k + 5], ttl) end
      table.insert(done, i)
      table.insert(done, spent)
    end
  end
  if rpm > 0 then
    redis.call('HSET', KEYS[k + 1], 'l', tostring(rls[i] - 1), 's', tostring(now))
    redis.call('EXPIRE', KEYS[k + 1], 120)
  end
  if tpm > 0 then
    redis.call('HSET', KEYS[k + 2], 'l', tostring(tls[i] - cost), 's', tostring(now))
    redis.call('EXPIRE', KEYS[k + 2], 120)
  end
end
return done
"""

_REASONS = {1: "rpm", 2: "tpm", 3: "budget", 4: "money", 5: "money"}
FIRST_EXHAUSTED = 5

# A settled cost above the one reserved. KEYS: money counter, money alert mark. ARGV: the
# difference (nanos, above 0), the alert (nanos), the mark's ttl (0: none). Returns {1, spend}
# when the spend reached the alert and this is the first to see it in the period, else {0, 0}.
SETTLE_MONEY = """
local spent = redis.call('INCRBY', KEYS[1], ARGV[1])
if spent >= tonumber(ARGV[2]) and redis.call('SET', KEYS[2], '1', 'NX') then
  if tonumber(ARGV[3]) > 0 then redis.call('EXPIRE', KEYS[2], ARGV[3]) end
  return {1, spent}
end
return {0, 0}
"""

# KEYS: the images bucket. ARGV: ipm, images asked for. Returns 0 when taken, else the wait in ms.
ACQUIRE_IMAGES = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local cap, cost = tonumber(ARGV[1]), tonumber(ARGV[2])
local v = redis.call('HMGET', KEYS[1], 'l', 's')
local l, s = tonumber(v[1]), tonumber(v[2])
if l == nil or s == nil then l = cap else l = math.min(cap, l + (now - s) * cap / 60) end
local need = math.min(cost, cap)
if l < need then return math.ceil((need - l) * 60000 / cap) end
redis.call('HSET', KEYS[1], 'l', tostring(l - cost), 's', tostring(now))
redis.call('EXPIRE', KEYS[1], 120)
return 0
"""

# KEYS: the image units bucket, the image budget counter. ARGV: upm (0: none), units, budget
# (-1: none), budget ttl (0: none). Returns {0, 0} when taken, else {1, wait in ms} (upm) or
# {2, 0} (budget).
ACQUIRE_UNITS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local cap, cost = tonumber(ARGV[1]), tonumber(ARGV[2])
local budget, ttl = tonumber(ARGV[3]), tonumber(ARGV[4])
local l = 0
if cap > 0 then
  local v = redis.call('HMGET', KEYS[1], 'l', 's')
  local sl, ss = tonumber(v[1]), tonumber(v[2])
  if sl == nil or ss == nil then l = cap else l = math.min(cap, sl + (now - ss) * cap / 60) end
  local need = math.min(cost, cap)
  if l < need then return {1, math.ceil((need - l) * 60000 / cap)} end
end
if budget >= 0 then
  local used = tonumber(redis.call('GET', KEYS[2]) or '0')
  if used + cost > budget then return {2, 0} end
  redis.call('INCRBY', KEYS[2], cost)
  if ttl > 0 then redis.call('EXPIRE', KEYS[2], ttl) end
end
if cap > 0 then
  redis.call('HSET', KEYS[1], 'l', tostring(l - cost), 's', tostring(now))
  redis.call('EXPIRE', KEYS[1], 120)
end
return {0, 0}
"""


class RedisLimiter:
    """Exact limits across processes, one Redis round trip per request. ``on_budget``: what a
    money budget's events are given to (by the gateway that reaches its alert, or whose
    request it refuses first in the period)."""

    def __init__(self, url: str, *, prefix: str = "inferd",
                 on_budget: OnBudget = no_event) -> None:
        self.redis: aioredis.Redis = aioredis.from_url(url)
        self.prefix = prefix
        self.on_budget = on_budget
        self._settle_money = self.redis.register_script(SETTLE_MONEY)
        self._acquire = self.redis.register_script(ACQUIRE)
        self._acquire_images = self.redis.register_script(ACQUIRE_IMAGES)
        self._acquire_units = self.redis.register_script(ACQUIRE_UNITS)
        self._pending: list[tuple[str, int, bool]] = []
        # settled costs above the reserved ones at a budget with an alert: (gate, period
        # start, money counter, alert mark, difference, mark's ttl)
        self._alerting: list[tuple[Gate, float, str, str, int, int]] = []
        self._gates = GateCache()
        self._flusher: asyncio.Task[None] | None = None

    def _keys(self, key_id: str, budget_start: float | None) -> list[str]:
        base = f"{self.prefix}:limits:{{{key_id}}}"
        period = "none" if budget_start is None else str(int(budget_start))
        return [f"{base}:req", f"{base}:tok", f"{base}:budget:{period}",
                f"{base}:money:{period}", f"{base}:money-alert:{period}",
                f"{base}:money-exhausted:{period}"]

    async def acquire(self, principal: Principal, tokens: int, cost: int = 0) -> Reservation:
        now = time.time()
        keys: list[str] = []
        args: list[int] = [tokens, cost]
        taken: list[tuple[Gate, float | None]] = []
        ends: list[float | None] = []
        for gate in self._gates.of(principal):
            start, end, budget, ttl = None, None, -1, 0
            if gate.budget is not None or gate.money is not None:
                start, end = period_bounds(gate.period, now)
                budget = -1 if gate.budget is None else gate.budget
                ttl = int(end - now) + 3600 if end is not None else 0
            keys += self._keys(gate.key, start)
            args += [gate.rpm or 0, gate.tpm or 0, budget, ttl,
                     -1 if gate.money is None else gate.money,
                     -1 if gate.alert is None else gate.alert]
            taken.append((gate, start))
            ends.append(end)
        alerts: tuple[Gate, ...] = ()
        if keys:
            result: Any = await self._acquire(keys=keys, args=args)
            if int(result[0]) != 1:
                refusals = []
                for at in range(1, len(result) - 3, 4):
                    code = int(result[at + 1])
                    reason = _REASONS[code]
                    index = int(result[at + 2]) - 1
                    wait = int(result[at]) / 1000.0
                    gate, start = taken[index]
                    if reason in ("budget", "money"):
                        end = ends[index]
                        wait = end - time.time() if end is not None else NO_PERIOD_RETRY_SECONDS
                    refusals.append(gate_limited(reason, gate, wait))
                    if code == FIRST_EXHAUSTED:
                        self.on_budget(BudgetEvent(EXHAUSTED, gate, int(result[at + 3]),
                                                   start or 0.0))
                raise longest(refusals)
            events = [BudgetEvent(ALERT, taken[int(result[at]) - 1][0], int(result[at + 1]),
                                  taken[int(result[at]) - 1][1] or 0.0)
                      for at in range(1, len(result) - 1, 2)]
            alerts = tuple(event.gate for event in events)
            for event in events:
                self.on_budget(event)
        done = tuple(taken)
        return Reservation(principal, tokens, own_start(done, principal), done, cost, alerts)

    async def acquire_images(self, principal: Principal, count: int) -> None:
        if principal.ipm is None:
            return
        key = f"{self.prefix}:limits:{{{principal.limit_key}}}:img"
        wait: Any = await self._acquire_images(keys=[key], args=[principal.ipm, count])
        if int(wait):
            raise rate_limited("ipm", principal, int(wait) / 1000.0)

    def _unit_keys(self, key_id: str, budget_start: float | None) -> list[str]:
        base = f"{self.prefix}:limits:{{{key_id}}}"
        period = "none" if budget_start is None else str(int(budget_start))
        return [f"{base}:units", f"{base}:unit-budget:{period}"]

    async def acquire_image_units(self, principal: Principal, units: int) -> None:
        budget, ttl, start, end = -1, 0, None, None
        if principal.image_budget is not None:
            now = time.time()
            start, end = period_bounds(principal.budget_period, now)
            budget = principal.image_budget
            ttl = int(end - now) + 3600 if end is not None else 0
        result: Any = await self._acquire_units(
            keys=self._unit_keys(principal.limit_key, start),
            args=[principal.upm or 0, units, budget, ttl])
        reason = int(result[0])
        if reason == 1:
            raise rate_limited("upm", principal, int(result[1]) / 1000.0)
        if reason == 2:
            wait = end - time.time() if end is not None else NO_PERIOD_RETRY_SECONDS
            raise rate_limited("image_budget", principal, wait)

    async def seed_image_budget(self, key_id: str, period_start: float, used: int) -> None:
        await self.redis.set(self._unit_keys(key_id, period_start)[1], used, nx=True)

    def settle(self, reservation: Reservation, tokens: int, cost: int | None = None) -> None:
        delta = tokens - reservation.tokens
        spent = 0 if cost is None else cost - reservation.cost
        if not delta and not spent:
            return
        for gate, start in reservation.taken:
            keys = self._keys(gate.key, start)
            if gate.tpm is not None and delta:
                self._pending.append((keys[1], delta, True))
            if start is not None and gate.budget is not None and delta:
                self._pending.append((keys[2], delta, False))
            if start is not None and gate.money is not None and spent:
                if spent > 0 and gate.alert is not None:  # may reach the alert
                    end = period_bounds(gate.period, start)[1]
                    ttl = 0 if end is None else max(int(end - time.time()) + 3600, 1)
                    self._alerting.append((gate, start, keys[3], keys[4], spent, ttl))
                else:
                    self._pending.append((keys[3], spent, False))
        if ((self._pending or self._alerting)
                and (self._flusher is None or self._flusher.done())):
            self._flusher = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        await asyncio.sleep(0.01)  # gather the corrections of a burst into one pipeline
        pending, self._pending = self._pending, []
        alerting, self._alerting = self._alerting, []
        if not pending and not alerting:
            return
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for key, delta, is_bucket in pending:
                    if is_bucket:
                        pipe.hincrbyfloat(key, "l", -delta)
                    else:
                        pipe.incrby(key, delta)
                for gate, _, counter, mark, delta, ttl in alerting:
                    await self._settle_money(keys=[counter, mark],
                                             args=[delta, gate.alert or 0, ttl], client=pipe)
                results = await pipe.execute()
        except aioredis.RedisError as exc:
            log.warning("could not settle %d reservations in Redis: %s",
                        len(pending) + len(alerting), exc)
            return
        for (gate, start, *_), reached in zip(alerting, results[len(pending):], strict=True):
            if int(reached[0]):
                self.on_budget(BudgetEvent(ALERT, gate, int(reached[1]), start))

    async def seed_budget(self, key_id: str, period_start: float, used: int) -> None:
        await self.redis.set(self._keys(key_id, period_start)[2], used, nx=True)

    async def seed_money(self, key_id: str, period_start: float, spent: int) -> None:
        await self.redis.set(self._keys(key_id, period_start)[3], spent, nx=True)

    async def money_spent(self, key_id: str, period_start: float | None) -> int:
        """The money (nanos) spent and reserved in a budget period."""
        value = await self.redis.get(self._keys(key_id, period_start)[3])
        return int(value or 0)

    async def budget_used(self, key_id: str, period_start: float | None) -> int:
        value = await self.redis.get(self._keys(key_id, period_start)[2])
        return int(value or 0)

    async def reset(self, key_id: str) -> None:
        """Forget a key's buckets and counters (tests, and a deleted key)."""
        base = f"{self.prefix}:limits:{{{key_id}}}"
        names = [k async for k in self.redis.scan_iter(match=f"{base}:*")]
        if names:
            await self.redis.delete(*names)

    async def close(self) -> None:
        if self._flusher is not None and not self._flusher.done():
            await self._flusher
        await self.redis.aclose()
