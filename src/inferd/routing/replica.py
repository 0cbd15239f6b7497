"""A replica (one place a model runs) and its live state: health, load, cooldown, latency.

State changes are plain attribute writes on the event loop (no locks needed): the router calls
``record_success`` / ``record_failure`` around each request, the health checker calls
``record_probe``. ``state()`` is what the admin API and the metrics read.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TypedDict

from inferd.engines.base import Engine
from inferd.jsontypes import JsonObject
from inferd.settings import RouterSettings

# Exponential backoff of a failing replica: base * 2**(failures-1), capped; the defaults are
# the settings' (``replica_cooldown_base``, ``replica_cooldown_max``).
COOLDOWN_BASE: float = RouterSettings.model_fields["replica_cooldown_base"].default
COOLDOWN_MAX: float = RouterSettings.model_fields["replica_cooldown_max"].default
# Seconds a load read stays usable (the default of ``RouterSettings.load_stale_after``).
LOAD_TTL: float = RouterSettings.model_fields["load_stale_after"].default
# Weight of the newest sample in the latency moving average.
LATENCY_ALPHA = 0.2


class ReplicaState(TypedDict):
    """A replica's live state as the admin API shows it."""

    id: str
    model: str
    kind: str
    weight: float
    healthy: bool
    available: bool
    in_flight: int
    cooled_down_until: float | None
    consecutive_failures: int
    cooldown_seconds: float
    last_error: str | None
    last_error_at: float | None
    latency_ms: float | None
    requests: int
    errors: int
    checking: bool
    running: float | None
    waiting: float | None
    kv_cache_usage: float | None
    load_read_at: float | None


@dataclass
class Replica:
    """One place a model runs, with the state the router keeps about it."""

    id: str
    model: str
    engine: Engine
    weight: float = 1.0
    in_flight: int = 0
    meta: JsonObject = field(default_factory=dict)
    kind: str = "local"
    # Used only when no other replica of the model is available (``inferd.routing.standby``).
    standby: bool = False
    healthy: bool = True
    cooldown_until: float = 0.0
    failures: int = 0  # consecutive failed requests; reset by a successful one
    cooldown: float = 0.0  # seconds of the latest cooldown (it doubles per failure)
    last_error: str | None = None
    last_error_at: float | None = None
    latency: float | None = None  # moving average of successful request latency, seconds
    requests: int = 0
    errors: int = 0
    # False until a health probe or a request has answered: the state is not known yet
    probed: bool = False
    cooldown_base: float = COOLDOWN_BASE
    cooldown_max: float = COOLDOWN_MAX
    # The load its engine last reported (``inferd.routing.load``), when, and this gateway's
    # requests in flight at that moment; a read older than ``load_ttl`` seconds is not used.
    running: float | None = None
    waiting: float | None = None
    kv_cache_usage: float | None = None
    load_read_at: float | None = None
    in_flight_at_read: int = 0
    load_ttl: float = LOAD_TTL
    # Requests it runs at once (fair queueing, ``inferd.routing.fairqueue``): None, no bound;
    # with ``learn_capacity`` the running count its engine last reported while it had
    # requests waiting (a full engine runs as many as it can).
    capacity: int | None = None
    learn_capacity: bool = False
    # slots beyond the capacity for a request whose team or key has nothing running on the
    # model (``options.reserve``; fair queueing)
    reserve: int = 0
    learned_capacity: float | None = None

    def record_load(self, running: float, waiting: float, kv_cache_usage: float | None,
                    now: float | None = None) -> None:
        """The load the replica's engine reports (read by the catalogue's poller)."""
        self.running, self.waiting, self.kv_cache_usage = running, waiting, kv_cache_usage
        self.load_read_at = time.time() if now is None else now
        self.in_flight_at_read = self.in_flight
        if running > 0 and (waiting > 0 or running > (self.learned_capacity or 0.0)):
            self.learned_capacity = running

    def limit(self) -> float | None:
        """The requests it takes at once (None: no bound, or none learned yet)."""
        return self.learned_capacity if self.learn_capacity else self.capacity

    def load(self, now: float | None = None) -> float:
        """Requests counted against its capacity: ``busy()``, less this gateway's requests
        that ended since the read (they run no more), never fewer than its own in flight."""
        if self.load_read_at is None or self.running is None:
            return float(self.in_flight)
        now = time.time() if now is None else now
        if now - self.load_read_at > self.load_ttl:
            return float(self.in_flight)
        reported = self.running + (self.waiting or 0.0)
        return max(float(self.in_flight), reported + self.in_flight - self.in_flight_at_read)

    def busy(self, now: float | None = None) -> float:
        """Requests the replica has: its engine's running + waiting from a fresh read, plus
        those this gateway sent since (its own in-flight count when it has no fresh read)."""
        if self.load_read_at is None or self.running is None:
            return float(self.in_flight)
        now = time.time() if now is None else now
        if now - self.load_read_at > self.load_ttl:
            return float(self.in_flight)
        sent_since = max(0, self.in_flight - self.in_flight_at_read)
        return self.running + (self.waiting or 0.0) + sent_since

    def available(self, now: float) -> bool:
        """Healthy and ready: the router may send it a request."""
        return self.healthy and now >= self.cooldown_until and self.engine.ready()

    def record_success(self, seconds: float) -> None:
        self.requests += 1
        self.failures = 0
        self.probed = True
        self.latency = seconds if self.latency is None else (
            LATENCY_ALPHA * seconds + (1 - LATENCY_ALPHA) * self.latency)

    def record_failure(self, error: str, now: float | None = None) -> None:
        """Take the replica out of rotation for a backoff that doubles per failure."""
        now = time.time() if now is None else now
        self.requests += 1
        self.errors += 1
        self.failures += 1
        self.healthy = False
        self.probed = True
        backoff = min(self.cooldown_max, self.cooldown_base * 2 ** (self.failures - 1))
        self.cooldown = backoff
        self.cooldown_until = max(self.cooldown_until, now + backoff)
        self.last_error = error
        self.last_error_at = now

    def record_probe(self, ok: bool, error: str | None = None, now: float | None = None) -> None:
        """A health probe's outcome: brings a replica back once its cooldown is over."""
        now = time.time() if now is None else now
        self.probed = True
        if ok:
            if not self.healthy and now >= self.cooldown_until:
                self.healthy = True
            return
        if self.healthy:
            self.record_failure(error or "health check failed", now)
            self.requests -= 1  # a probe is not a request
            self.errors -= 1
        else:
            self.last_error = error or "health check failed"
            self.last_error_at = now

    def state(self) -> ReplicaState:
        """The live state shown by the admin API (never any credential)."""
        now = time.time()
        return {
            "id": self.id, "model": self.model, "kind": self.kind, "weight": self.weight,
            "healthy": self.healthy, "available": self.available(now),
            "in_flight": self.in_flight,
            "cooled_down_until": self.cooldown_until if self.cooldown_until > now else None,
            "consecutive_failures": self.failures, "cooldown_seconds": self.cooldown,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "latency_ms": None if self.latency is None else round(self.latency * 1000, 3),
            "requests": self.requests, "errors": self.errors,
            # a remote replica not probed yet (just added or enabled): its health is unknown
            "checking": self.kind != "local" and not self.probed,
            # the load its engine reports (None: it publishes none, or not read yet)
            "running": self.running, "waiting": self.waiting,
            "kv_cache_usage": self.kv_cache_usage, "load_read_at": self.load_read_at,
        }
