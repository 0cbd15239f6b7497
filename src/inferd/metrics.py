"""Prometheus collectors (prometheus-client), one registry per running inferd.

Request metrics are updated by ``inferd.inference`` on every request. Gauges owned by other
parts are read when ``/metrics`` is scraped, through callbacks registered here, so this module
imports none of them:

- ``register_gauge(name, help, read)``: any number, e.g. the job queue's depth;
- ``register_family(name, help, labels, read)``: a labelled gauge, e.g. the pending jobs per
  model (``read`` returns the label values and the value of each series);
- ``register_replicas(read)``: the router's replica states (healthy, in flight, cooldown);
- ``register_refresh(refresh)``: a coroutine awaited before each scrape (``render_off_loop``)
  to bring up to date what the callbacks read, e.g. the job counts of the database.

Every label value comes from a bounded set: model names the router knows (others are counted
as ``UNKNOWN_MODEL``), replica ids, endpoint names, HTTP statuses and error codes of inferd
itself; never a key, a request id or any other string a client chooses.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

log = logging.getLogger("inferd.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# The model label of requests for a model the router does not know.
UNKNOWN_MODEL = "_unknown"
T = TypeVar("T")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0, 30.0, 60.0, 120.0)
# The time between two generated chunks of a stream: engines take a few ms to a few hundred
# ms per token.
INTER_TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2,
                       0.3, 0.5, 1.0, 2.5)
# The time a request waits at the gateway for a replica of its model to have room (fair
# queueing): none at all for most, up to a job's ``queue_batch_timeout``.
QUEUE_WAIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                      60.0, 120.0, 300.0)
# The levels a money budget is set at (the label of ``inferd_budget_alerts_total``).
BUDGET_LEVELS = ("key", "user", "team")
# The events of a money budget the budget webhook sends, and what became of each
# (``inferd_budget_webhooks_total``).
BUDGET_EVENTS = ("budget.alert", "budget.exhausted")
WEBHOOK_OUTCOMES = ("delivered", "failed", "dropped")
# How long the coroutines of ``register_refresh`` may hold up a scrape.
REFRESH_TIMEOUT = 5.0
Series = Iterable[tuple[Sequence[str], float]]


class StoreReading(Generic[T]):
    """A figure read from the database for ``/metrics``: read again when a scrape asks for it
    (``refresh``) and it is at least ``every`` seconds old, so its cost does not grow with the
    request rate or the scrapers. A failed read drops the figure (its series are absent, not
    stale) and raises."""

    def __init__(self, read: Callable[[], Awaitable[T]], every: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.read = read
        self.every = every
        self.clock = clock
        self.value: T | None = None
        self._read_at: float | None = None  # monotonic

    async def refresh(self) -> None:
        now = self.clock()
        if self._read_at is not None and now - self._read_at < self.every:
            return
        try:
            value = await self.read()
        except BaseException:
            self.value = self._read_at = None
            raise
        self.value, self._read_at = value, now


@dataclass
class ReplicaState:
    """What ``/metrics`` shows about one replica."""

    id: str
    model: str
    healthy: bool
    in_flight: int = 0
    cooldown_until: float | None = None  # epoch seconds
    failures: int = 0
    # the load its engine reports (None: none read, or the read is stale)
    running: float | None = None
    waiting: float | None = None
    kv_cache_usage: float | None = None


class _Callbacks(Collector):
    """Reads the registered gauges and replica states at scrape time."""

    def __init__(self) -> None:
        self.gauges: dict[str, tuple[str, Callable[[], float]]] = {}
        self.families: dict[str, tuple[str, list[str], Callable[[], Series]]] = {}
        self.replicas: list[Callable[[], Iterable[ReplicaState]]] = []

    def collect(self) -> Iterator[Metric]:
        for name, (doc, read) in self.gauges.items():
            family = GaugeMetricFamily(name, doc)
            try:
                family.add_metric([], float(read()))
            except Exception as exc:  # a broken callback must not break the scrape
                log.warning("metric %s failed: %s", name, exc)
                continue
            yield family
        for name, (doc, labels, read_series) in self.families.items():
            family = GaugeMetricFamily(name, doc, labels=labels)
            try:
                for values, value in read_series():
                    family.add_metric(list(values), float(value))
            except Exception as exc:
                log.warning("metric %s failed: %s", name, exc)
                continue
            yield family
        if not self.replicas:
            return
        labels = ["replica", "model"]
        healthy = GaugeMetricFamily("inferd_replica_healthy",
                                    "1 when the replica takes requests", labels=labels)
        in_flight = GaugeMetricFamily("inferd_replica_in_flight",
                                      "Requests the replica is serving", labels=labels)
        cooldown = GaugeMetricFamily("inferd_replica_cooldown_seconds",
                                     "Seconds until a cooled-down replica is tried again",
                                     labels=labels)
        failures = GaugeMetricFamily("inferd_replica_consecutive_failures",
                                     "Failures since the replica last succeeded", labels=labels)
        load = {name: GaugeMetricFamily(f"inferd_replica_{name}", doc, labels=labels)
                for name, doc in (("running", "Requests the replica's engine reports running"),
                                  ("waiting", "Requests the replica's engine reports waiting"),
                                  ("kv_cache_usage",
                                   "KV cache use the replica's engine reports (1: full)"))}
        now = time.time()
        for source in self.replicas:
            try:
                states = list(source())
            except Exception as exc:
                log.warning("replica states failed: %s", exc)
                continue
            for s in states:
                key = [s.id, s.model]
                healthy.add_metric(key, 1.0 if s.healthy else 0.0)
                in_flight.add_metric(key, float(s.in_flight))
                cooldown.add_metric(key, max(0.0, (s.cooldown_until or now) - now))
                failures.add_metric(key, float(s.failures))
                for name, reported in (("running", s.running), ("waiting", s.waiting),
                                       ("kv_cache_usage", s.kv_cache_usage)):
                    if reported is not None:
                        load[name].add_metric(key, float(reported))
        yield from (healthy, in_flight, cooldown, failures, *load.values())


class _Buckets:
    """One label set of a ``LoopHistogram``."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # per bucket, not cumulative; the last is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value


class LoopHistogram(Collector):
    """A histogram for observations on the event loop's hot path (one per streamed chunk):
    an observation is a bisection and two additions, a fraction of prometheus-client's
    (which takes a lock and walks the buckets in Python). Observed on the event loop's thread
    only; a scrape reads a copy of each label set's counts (its ``_sum`` may miss an
    observation made meanwhile)."""

    def __init__(self, name: str, doc: str, labels: Sequence[str], buckets: Sequence[float],
                 registry: CollectorRegistry) -> None:
        self.name, self.doc, self.labelnames = name, doc, list(labels)
        self.bounds = tuple(float(b) for b in buckets)
        self._children: dict[tuple[str, ...], _Buckets] = {}
        registry.register(self)

    def labels(self, *values: str) -> _Buckets:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = _Buckets(self.bounds)
        return child

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self.name, self.doc, labels=self.labelnames)

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.doc, labels=self.labelnames)
        uppers = [floatToGoString(b) for b in self.bounds]  # type: ignore[no-untyped-call]
        uppers.append("+Inf")
        for values, child in list(self._children.items()):
            counts, total = list(child.counts), child.total
            family.add_metric(list(values), list(zip(uppers, itertools.accumulate(counts),
                                                     strict=True)), total)
        yield family


class _Collected(Collector):
    """Metric families collected earlier (rendered later, in another thread)."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


class Metrics:
    """The collectors of one process and the hooks other parts register with."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("inferd_requests", "Inference requests by outcome",
                                ["model", "endpoint", "status"], registry=r)
        self.latency = Histogram("inferd_request_duration_seconds",
                                 "Time from request to last byte", ["model", "endpoint"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("inferd_time_to_first_token_seconds",
                              "Time from request to the first generated token sent (streams)",
                              ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.inter_token = LoopHistogram("inferd_inter_token_latency_seconds",
                                         "Time between two generated chunks sent (streams)",
                                         ["model"], INTER_TOKEN_BUCKETS, r)
        self.tokens = Counter("inferd_tokens", "Tokens processed", ["model", "type"],
                              registry=r)
        self.images = Counter("inferd_images", "Pictures generated and denoising steps run",
                              ["model", "type"], registry=r)
        self.in_flight = Gauge("inferd_requests_in_flight", "Inference requests under way",
                               ["model"], registry=r)
        self.rate_limited = Counter("inferd_rate_limited", "Requests refused by a key's limits",
                                    ["reason"], registry=r)
        # money budgets whose spend reached their alert percentage (once per budget and period)
        self.budget_alerts = Counter("inferd_budget_alerts",
                                     "Money budgets that reached their alert percentage",
                                     ["level"], registry=r)
        for level in BUDGET_LEVELS:  # a series per level from the start, 0 until one fires
            self.budget_alerts.labels(level)
        # budget events sent to the budget webhook: delivered, failed after every attempt, or
        # dropped because its queue was full
        self.budget_webhooks = Counter("inferd_budget_webhooks",
                                       "Money budget events for the budget webhook, by outcome",
                                       ["type", "outcome"], registry=r)
        for event in BUDGET_EVENTS:
            for outcome in WEBHOOK_OUTCOMES:
                self.budget_webhooks.labels(event, outcome)
        # fair queueing (``inferd.routing.fairqueue``): the wait of each request admitted to
        # a model with a bounded capacity (0 for one that found room), and the refusals
        self.queue_wait = Histogram("inferd_gateway_queue_wait_seconds",
                                    "Time a request waited at the gateway for a replica of "
                                    "its model to have room", ["model", "priority"],
                                    buckets=QUEUE_WAIT_BUCKETS, registry=r)
        self.queue_refused = Counter("inferd_gateway_queue_refused",
                                     "Requests refused by the gateway's queue: full, or "
                                     "waited past their timeout",
                                     ["model", "priority", "reason"], registry=r)
        # requests let through into a replica's reserve (a group with nothing running)
        self.queue_reserve = Counter("inferd_gateway_queue_reserve",
                                     "Requests let through into the reserve of a replica of "
                                     "their model (their team or key had nothing running)",
                                     ["model"], registry=r)
        self.auth_failures = Counter("inferd_auth_failures", "Requests refused with 401",
                                     registry=r)
        # process_resident_memory_bytes, process_open_fds, process_cpu_seconds_total...
        ProcessCollector(registry=r)
        # read at each scrape, on the event loop (the state they read is the loop's)
        self._callbacks = _Callbacks()
        self._refreshes: list[Callable[[], Awaitable[None]]] = []
        # Label children by key, so the hot path skips prometheus-client's label lookup.
        self._children: dict[tuple[str, ...], Any] = {}

    def register_gauge(self, name: str, doc: str, read: Callable[[], float]) -> None:
        """Expose ``read()`` as gauge ``name`` (e.g. ``inferd_queue_depth``)."""
        self._callbacks.gauges[name] = (doc, read)

    def register_family(self, name: str, doc: str, labels: Sequence[str],
                        read: Callable[[], Series]) -> None:
        """Expose gauge ``name`` with ``labels``: ``read()`` returns ``(label values, value)``
        of each series. Its label values must come from a bounded set (model names the router
        knows, never a client's string)."""
        self._callbacks.families[name] = (doc, list(labels), read)

    def register_replicas(self, read: Callable[[], Iterable[ReplicaState]]) -> None:
        """Expose the replica states ``read()`` returns at each scrape."""
        self._callbacks.replicas.append(read)

    def register_refresh(self, refresh: Callable[[], Awaitable[None]]) -> None:
        """Await ``refresh()`` before each scrape (at most ``REFRESH_TIMEOUT`` seconds; the
        scrape goes on without it when it fails or is late)."""
        self._refreshes.append(refresh)

    def child(self, kind: str, *labels: str) -> Any:
        key = (kind, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = getattr(self, kind).labels(*labels)
        return child

    def render(self) -> bytes:
        return self._render(list(self._callbacks.collect()))

    async def render_off_loop(self) -> bytes:
        """``render()`` with the text built in a worker thread: a scrape does not hold up the
        event loop (and the requests on it) however many series there are. The registered
        callbacks are still read on the loop, where the state they read changes."""
        for refresh in self._refreshes:
            try:
                await asyncio.wait_for(refresh(), REFRESH_TIMEOUT)
            except Exception as exc:  # TimeoutError too: the scrape goes on
                log.warning("metrics refresh %s failed: %r", refresh, exc)
        return await asyncio.to_thread(self._render, list(self._callbacks.collect()))

    def _render(self, collected: list[Metric]) -> bytes:
        return generate_latest(self.registry) + generate_latest(_Collected(collected))
