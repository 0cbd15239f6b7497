"""Per-key limits: requests/min, tokens/min and token budgets, images/min, image cost units/min
and image budgets, exact under concurrency.

The seam is ``Limiter``: ``acquire`` checks every limit of a key and reserves in one atomic
step (or raises ``RateLimited``), ``settle`` corrects the token reservation with the real
usage once the request is done. Two implementations:

- ``LocalLimiter``: state in this process. The check-and-reserve runs without an ``await``
  in the event loop, so concurrent requests cannot interleave inside it.
- ``inferd.auth.redis_limits.RedisLimiter``: state in Redis, one script call per request, so
  several gateways share the limits exactly.

Rates are token buckets (the generic cell rate algorithm): a key with ``rpm=10`` may send 10
requests at once and then one every 6 seconds; tokens/min works the same with the request's
token estimate as its cost. A budget is a counter of tokens used since the period began
(UTC day, ISO week, calendar month) or ever.

A money budget (``max_budget``, in the price book's currency units, per the same period)
counts the cost of requests in nanos (10^-9 units, integers: sums are exact): a request
reserves its worst case cost and settles to the real cost. When a level's spend first reaches
its ``budget_alert`` percentage in a period, by a reservation or by a settled cost above the
one reserved, the limiter hands a ``BudgetEvent`` (``budget.alert``) to its ``on_budget``
(``BudgetAlerts``: a warning, a metric and the budget webhook), once per budget and period: in
this process, or among every gateway sharing Redis. The first request a money budget refuses in
a period gives a ``budget.exhausted`` event the same way.

Requests/min, tokens/min, token and money budgets apply at each level that sets one: the key's own
``Gate``, then its user's and its team's (``Principal.levels``), whose counters every key of
that user or team shares. A request is reserved at every level or at none; a refused one is
told of the limit that holds it back longest (``longest``), so its ``Retry-After`` is when
every level has room.
"""

from __future__ import annotations

import calendar
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal, Protocol

from inferd.auth.principal import BudgetPeriod, LimitLevel, Principal
from inferd.errors import RateLimited
from inferd.metrics import Metrics

log = logging.getLogger("inferd.limits")

# A total budget (no period) has no end: tell clients to come back in an hour.
NO_PERIOD_RETRY_SECONDS = 3600.0


@dataclass(frozen=True, slots=True)
class Gate:
    """One level's requests/min, tokens/min and token budget, counted under ``key``."""

    key: str
    holder: str  # what the limit belongs to, for the error message
    rpm: int | None
    tpm: int | None
    budget: int | None
    period: BudgetPeriod | None
    money: int | None = None  # the money budget, in nanos
    alert: int | None = None  # the spend (nanos) at which the budget's alert is given
    max_budget: float | None = None  # the money budget as set, for the error message
    level: str = "key"  # key, user or team
    # what the budget belongs to, as the admin API names it: the key's id and name, or the
    # user's or team's id and name
    owner_id: str | int | None = None
    owner_name: str = ""


# Money is counted in nanos of the currency unit (prices have at most 9 decimal places).
NANOS = 1_000_000_000
# The highest money budget: 10^18 nanos, within Redis's 64-bit counters with room for the
# reservations beside it.
MAX_BUDGET = 1e9


def nanos(amount: float) -> int:
    """An amount of money in nanos (rounded to the nearest)."""
    return round(amount * NANOS)


def _money(max_budget: float | None, alert: int) -> tuple[int | None, int | None, float | None]:
    if max_budget is None:
        return None, None, None
    money = nanos(max_budget)
    return money, money * alert // 100, max_budget


def _level_gate(level: LimitLevel) -> Gate:
    return Gate(level.limit_id, f"the {level.kind} '{level.name}'", level.rpm, level.tpm,
                level.token_budget, level.budget_period,
                *_money(level.max_budget, level.budget_alert), level.kind,
                owner_id=level.row_id, owner_name=level.name)


def _key_row(key_id: str | None) -> str | int | None:
    """A key's id as the admin API shows it (the key row's number)."""
    return int(key_id) if key_id is not None and key_id.isdigit() else key_id


def gates(principal: Principal) -> list[Gate]:
    """The levels whose token limits apply to a request: the key's, its user's, its team's
    (those that set any)."""
    out = []
    if (principal.rpm is not None or principal.tpm is not None
            or principal.token_budget is not None or principal.max_budget is not None):
        out.append(Gate(principal.limit_key, "this API key", principal.rpm, principal.tpm,
                        principal.token_budget, principal.budget_period,
                        *_money(principal.max_budget, principal.budget_alert),
                        owner_id=_key_row(principal.key_id), owner_name=principal.name))
    out.extend(_level_gate(level) for level in principal.levels if level.limited)
    return out


BudgetEventType = Literal["budget.alert", "budget.exhausted"]
ALERT: BudgetEventType = "budget.alert"
EXHAUSTED: BudgetEventType = "budget.exhausted"


@dataclass(frozen=True, slots=True)
class BudgetEvent:
    """A money budget that reached its alert (``budget.alert``) or refused a request
    (``budget.exhausted``): given once per budget and period."""

    type: BudgetEventType
    gate: Gate
    spend: int  # nanos spent in the period, with the open reservations, when it happened
    period_start: float  # epoch seconds (0.0: a total budget)
    at: float = field(default_factory=time.time)


# What a limiter gives its money budgets' events to.
OnBudget = Callable[[BudgetEvent], None]


def no_event(event: BudgetEvent) -> None:
    """An ``OnBudget`` that does nothing (limiters built without one)."""


class BudgetAlerts:
    """A money budget's events: a warning in the log, ``inferd_budget_alerts_total`` for an
    alert, then ``notify`` (the budget webhook, when one is set)."""

    def __init__(self, metrics: Metrics, notify: OnBudget = no_event) -> None:
        self.metrics = metrics
        self.notify = notify

    def __call__(self, event: BudgetEvent) -> None:
        gate = event.gate
        if event.type == ALERT:
            log.warning("the spend of %s reached %.9g of its budget of %s in this period",
                        gate.holder, (gate.alert or 0) / NANOS, gate.max_budget)
            self.metrics.child("budget_alerts", gate.level).inc()
        else:
            log.warning("the budget of %s (%s) is used up in this period: a request was "
                        "refused at a spend of %.9g", gate.holder, gate.max_budget,
                        event.spend / NANOS)
        self.notify(event)


class GateCache:
    """The gates of each principal, made once per principal (a reloaded key is a new
    principal, with its new limits): the hot path allocates none."""

    def __init__(self) -> None:
        self._made: dict[str, tuple[Principal, tuple[Gate, ...]]] = {}

    def of(self, principal: Principal) -> tuple[Gate, ...]:
        made = self._made.get(principal.limit_key)
        if made is None or made[0] is not principal:
            made = self._made[principal.limit_key] = (principal, tuple(gates(principal)))
        return made[1]

    def clear(self) -> None:
        self._made.clear()


@dataclass(slots=True)
class Reservation:
    """What ``acquire`` took for one request; handed back to ``settle``."""

    principal: Principal
    tokens: int
    budget_start: float | None  # the key's own budget period
    # every level reserved at, with the start of its budget period (None: no budget)
    taken: tuple[tuple[Gate, float | None], ...] = ()
    cost: int = 0  # the worst case cost reserved, in nanos
    # the money budgets whose alert this reservation crossed first in their period (each
    # handed to the limiter's ``on_budget`` too, as a ``budget.alert``)
    alerts: tuple[Gate, ...] = ()


class Limiter(Protocol):
    """Atomic check-and-reserve of a key's limits."""

    async def acquire(self, principal: Principal, tokens: int, cost: int = 0) -> Reservation:
        """Reserve one request, ``tokens`` tokens and ``cost`` nanos of money, or raise
        ``RateLimited``."""
        ...

    def settle(self, reservation: Reservation, tokens: int, cost: int | None = None) -> None:
        """Replace the reserved token estimate with the tokens really used, and the reserved
        cost with the real one (nanos; None: as reserved), without waiting. A real cost above
        the reserved one that takes a money budget to its alert gives the alert
        (``on_budget``), unless it was given in the period already."""
        ...

    async def acquire_images(self, principal: Principal, count: int) -> None:
        """Take ``count`` images from the key's images/min bucket, or raise ``RateLimited``."""
        ...

    async def acquire_image_units(self, principal: Principal, units: int) -> None:
        """Take ``units`` image cost units from the key's units/min bucket (``upm``) and its
        image budget together, or raise ``RateLimited``."""
        ...

    async def seed_budget(self, key_id: str, period_start: float, used: int) -> None:
        """Start a budget counter at ``used`` unless it already counts this period.

        ``key_id`` is the principal's ``limit_key``.
        """
        ...

    async def seed_image_budget(self, key_id: str, period_start: float, used: int) -> None:
        """``seed_budget`` for the image budget (image cost units)."""
        ...

    async def seed_money(self, key_id: str, period_start: float, spent: int) -> None:
        """``seed_budget`` for the money budget (nanos)."""
        ...

    async def close(self) -> None: ...


def period_bounds(period: BudgetPeriod | None, now: float) -> tuple[float, float | None]:
    """Start and end (epoch seconds, UTC) of the budget period holding ``now``."""
    if period is None:
        return 0.0, None
    day = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        start, end = day, day + timedelta(days=1)
    elif period == "week":
        start = day - timedelta(days=day.weekday())
        end = start + timedelta(days=7)
    else:
        start = day.replace(day=1)
        days = calendar.monthrange(start.year, start.month)[1]
        end = start + timedelta(days=days)
    return start.timestamp(), end.timestamp()


def rate_limited(reason: str, principal: Principal, wait: float) -> RateLimited:
    if reason == "rpm":
        return RateLimited(f"Rate limit reached: {principal.rpm} requests per minute for this "
                           f"API key. Try again in {wait:.1f}s.", retry_after=wait)
    if reason == "ipm":
        return RateLimited(f"Rate limit reached: {principal.ipm} images per minute for this "
                           f"API key. Try again in {wait:.1f}s.", retry_after=wait)
    if reason == "upm":
        return RateLimited(f"Rate limit reached: {principal.upm} image units (steps x "
                           "megapixels x images) per minute for this API key. Try again in "
                           f"{wait:.1f}s.", retry_after=wait)
    if reason == "image_budget":
        return RateLimited(f"Image budget of {principal.image_budget} image units (steps x "
                           "megapixels x images) for this API key is used up.",
                           retry_after=wait, code="insufficient_quota")
    if reason == "tpm":
        return RateLimited(f"Rate limit reached: {principal.tpm} tokens per minute for this "
                           f"API key. Try again in {wait:.1f}s.", retry_after=wait)
    return RateLimited(f"Token budget of {principal.token_budget} tokens for this API key is "
                       "used up.", retry_after=wait, code="insufficient_quota")


def gate_limited(reason: str, gate: Gate, wait: float) -> RateLimited:
    """The error of a level's limit (``reason``: rpm, tpm or budget)."""
    if reason == "rpm":
        return RateLimited(f"Rate limit reached: {gate.rpm} requests per minute for "
                           f"{gate.holder}. Try again in {wait:.1f}s.", retry_after=wait)
    if reason == "tpm":
        return RateLimited(f"Rate limit reached: {gate.tpm} tokens per minute for "
                           f"{gate.holder}. Try again in {wait:.1f}s.", retry_after=wait)
    if reason == "money":
        return RateLimited(f"Budget of {gate.max_budget:g} for {gate.holder} is used up "
                           "(this request's worst case cost would pass it).",
                           retry_after=wait, code="insufficient_quota")
    return RateLimited(f"Token budget of {gate.budget} tokens for {gate.holder} is used up.",
                       retry_after=wait, code="insufficient_quota")


def longest(refusals: list[RateLimited]) -> RateLimited:
    """Of the limits a request meets, the one that holds it back longest: its ``Retry-After``
    is when every level has room."""
    return max(refusals, key=lambda refusal: refusal.retry_after or 0.0)


def own_start(taken: tuple[tuple[Gate, float | None], ...], principal: Principal) -> float | None:
    """The budget period start of the key's own gate among those reserved."""
    for gate, start in taken:
        if gate.key == principal.limit_key:
            return start
    return None


class _KeyState:
    """Buckets and budget counter of one key (in this process)."""

    __slots__ = ("alerted", "budget_start", "budget_used", "exhausted", "money_start",
                 "money_used", "req_level", "req_stamp", "tok_level", "tok_stamp")

    def __init__(self, now: float) -> None:
        # None: a full bucket (the capacity is known only on use, and may change)
        self.req_level: float | None = None
        self.req_stamp = now
        self.tok_level: float | None = None
        self.tok_stamp = now
        self.budget_start = -1.0
        self.budget_used = 0
        self.money_start = -1.0
        self.money_used = 0  # nanos
        self.alerted = -1.0  # the period whose alert was given
        self.exhausted = -1.0  # the period whose first refusal by the money budget was given


def _refill(level: float | None, stamp: float, capacity: int, now: float) -> float:
    if level is None:
        return float(capacity)
    return min(float(capacity), level + (now - stamp) * capacity / 60.0)


class LocalLimiter:
    """Limits kept in this process's memory; exact for one process. ``on_budget``: what a
    money budget's events are given to."""

    def __init__(self, on_budget: OnBudget = no_event) -> None:
        self.on_budget = on_budget
        self._state: dict[str, _KeyState] = {}
        self._images: dict[str, tuple[float | None, float]] = {}  # key: (level, stamp)
        self._units: dict[str, tuple[float | None, float]] = {}  # key: (level, stamp)
        self._unit_budgets: dict[str, tuple[float, int]] = {}  # key: (period start, used)
        self._gates = GateCache()

    def _get(self, key_id: str, now: float) -> _KeyState:
        state = self._state.get(key_id)
        if state is None:
            state = self._state[key_id] = _KeyState(now)
        return state

    async def acquire(self, principal: Principal, tokens: int, cost: int = 0) -> Reservation:
        # No await between the checks and the updates: this block is atomic in the loop.
        now = time.monotonic()
        wall = time.time()
        plan: list[tuple[Gate, _KeyState, float, float, float | None]] = []
        refusals: list[RateLimited] = []
        exhausted: list[BudgetEvent] = []
        for gate in self._gates.of(principal):
            state = self._get(gate.key, now)
            req_level = tok_level = 0.0
            if gate.rpm is not None:
                req_level = _refill(state.req_level, state.req_stamp, gate.rpm, now)
                if req_level < 1.0:
                    refusals.append(gate_limited(
                        "rpm", gate, (1.0 - req_level) * 60.0 / max(gate.rpm, 1)))
            if gate.tpm is not None:
                tok_level = _refill(state.tok_level, state.tok_stamp, gate.tpm, now)
                need = min(tokens, gate.tpm)
                if tok_level < need:
                    refusals.append(gate_limited(
                        "tpm", gate, (need - tok_level) * 60.0 / max(gate.tpm, 1)))
            start = None
            if gate.budget is not None or gate.money is not None:
                start, end = period_bounds(gate.period, wall)
                wait = end - wall if end is not None else NO_PERIOD_RETRY_SECONDS
                used = state.budget_used if state.budget_start == start else 0
                if gate.budget is not None and used + tokens > gate.budget:
                    refusals.append(gate_limited("budget", gate, wait))
                spent = state.money_used if state.money_start == start else 0
                if gate.money is not None and spent + cost > gate.money:
                    refusals.append(gate_limited("money", gate, wait))
                    if state.exhausted != start:
                        state.exhausted = start
                        exhausted.append(BudgetEvent(EXHAUSTED, gate, spent, start))
            plan.append((gate, state, req_level, tok_level, start))
        if refusals:
            for event in exhausted:
                self.on_budget(event)
            raise longest(refusals)
        alerts: list[BudgetEvent] = []
        for gate, state, req_level, tok_level, start in plan:
            if gate.rpm is not None:
                state.req_level, state.req_stamp = req_level - 1.0, now
            if gate.tpm is not None:
                state.tok_level, state.tok_stamp = tok_level - tokens, now
            if start is not None and gate.budget is not None:
                if state.budget_start != start:
                    state.budget_start, state.budget_used = start, 0
                state.budget_used += tokens
            if start is not None and gate.money is not None:
                if state.money_start != start:
                    state.money_start, state.money_used = start, 0
                state.money_used += cost
                if (gate.alert is not None and state.money_used >= gate.alert
                        and state.alerted != start):
                    state.alerted = start
                    alerts.append(BudgetEvent(ALERT, gate, state.money_used, start))
        taken = tuple((gate, start) for gate, _, _, _, start in plan)
        for event in alerts:
            self.on_budget(event)
        return Reservation(principal, tokens, own_start(taken, principal), taken, cost,
                           tuple(event.gate for event in alerts))

    async def acquire_images(self, principal: Principal, count: int) -> None:
        if principal.ipm is None:
            return
        now = time.monotonic()
        level, stamp = self._images.get(principal.limit_key, (None, now))
        level = _refill(level, stamp, principal.ipm, now)
        need = min(count, principal.ipm)  # a request for more than a minute's worth waits
        if level < need:  # for a full bucket, then leaves a debt
            raise rate_limited("ipm", principal, (need - level) * 60.0 / principal.ipm)
        self._images[principal.limit_key] = (level - count, now)

    async def acquire_image_units(self, principal: Principal, units: int) -> None:
        # No await: the checks and the updates are atomic in the loop.
        key = principal.limit_key
        now = time.monotonic()
        level = 0.0
        if principal.upm is not None:
            saved, stamp = self._units.get(key, (None, now))
            level = _refill(saved, stamp, principal.upm, now)
            need = min(units, principal.upm)
            if level < need:
                raise rate_limited("upm", principal, (need - level) * 60.0 / principal.upm)
        if principal.image_budget is not None:
            wall = time.time()
            start, end = period_bounds(principal.budget_period, wall)
            counted, used = self._unit_budgets.get(key, (start, 0))
            used = used if counted == start else 0
            if used + units > principal.image_budget:
                wait = end - wall if end is not None else NO_PERIOD_RETRY_SECONDS
                raise rate_limited("image_budget", principal, wait)
            self._unit_budgets[key] = (start, used + units)
        if principal.upm is not None:
            self._units[key] = (level - units, now)

    async def seed_image_budget(self, key_id: str, period_start: float, used: int) -> None:
        if self._unit_budgets.get(key_id, (None, 0))[0] != period_start:
            self._unit_budgets[key_id] = (period_start, used)

    def settle(self, reservation: Reservation, tokens: int, cost: int | None = None) -> None:
        delta = tokens - reservation.tokens
        spent = 0 if cost is None else cost - reservation.cost
        if not delta and not spent:
            return
        for gate, start in reservation.taken:
            state = self._state.get(gate.key)
            if state is None:
                continue
            if gate.tpm is not None and state.tok_level is not None:
                # May go below zero: a request that used more than estimated leaves a debt.
                state.tok_level -= delta
            if start is not None and gate.budget is not None and state.budget_start == start:
                state.budget_used += delta
            if start is not None and gate.money is not None and state.money_start == start:
                state.money_used += spent
                if (spent > 0 and gate.alert is not None and state.money_used >= gate.alert
                        and state.alerted != start):
                    state.alerted = start
                    self.on_budget(BudgetEvent(ALERT, gate, state.money_used, start))

    async def seed_budget(self, key_id: str, period_start: float, used: int) -> None:
        state = self._get(key_id, time.monotonic())
        if state.budget_start != period_start:
            state.budget_start, state.budget_used = period_start, used

    async def seed_money(self, key_id: str, period_start: float, spent: int) -> None:
        state = self._get(key_id, time.monotonic())
        if state.money_start != period_start:
            state.money_start, state.money_used = period_start, spent

    def money_spent(self, key_id: str) -> int:
        """The money (nanos) spent and reserved in the key's current period."""
        state = self._state.get(key_id)
        return 0 if state is None else state.money_used

    def budget_used(self, key_id: str) -> int:
        state = self._state.get(key_id)
        return 0 if state is None else state.budget_used

    async def close(self) -> None:
        self._state.clear()
        self._images.clear()
        self._units.clear()
        self._unit_budgets.clear()
        self._gates.clear()
