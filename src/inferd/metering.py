"""Metering: what every finished request leaves behind.

``Metering`` owns the Prometheus metrics, the usage recorder (spooled, written in batches by a
thread of its own: ``inferd.usage``), the usage store it writes to and the request log
(``inferd.reqlog``, written the same way). ``Metering.finish`` turns one ``Call`` into metric
updates, one usage record, one request log record and, when asked for (or on a 5xx), one
structured log line. Nothing here reads or writes the database on the way of a request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from inferd.audit import request_scope
from inferd.auth.limits import Reservation
from inferd.auth.principal import Principal
from inferd.logs import request_id_var
from inferd.metrics import Metrics, ReplicaState
from inferd.prices import PriceBook
from inferd.reqlog import RequestLog, RequestRecord, client_of
from inferd.routing.fairqueue import Priority
from inferd.routing.router import Router
from inferd.schemas.answers import Usage
from inferd.settings import RequestLogSettings, UsageSettings
from inferd.store.db import Database, unreachable
from inferd.store.usage import UsageSink, UsageStore
from inferd.usage import UsageRecord, UsageRecorder, in_job

log = logging.getLogger("inferd.requests")

# The status recorded for a request whose client went away before the answer.
CLIENT_CLOSED = 499


class Call:
    """One request on its way through: what metering needs at the end."""

    __slots__ = (
        "_replica",
        "attempts",
        "endpoint",
        "flow",
        "flow_name",
        "flow_weight",
        "group",
        "group_weight",
        "image_units",
        "images",
        "label",
        "model",
        "principal",
        "priority",
        "request_body",
        "request_id",
        "reservation",
        "response_body",
        "scope",
        "span",
        "started",
        "steps",
        "stream",
        "ttft",
    )

    def __init__(self, endpoint: str, model: str, principal: Principal, stream: bool,
                 label: str | None = None, batch: bool = False) -> None:
        self.endpoint = endpoint
        self.model = model
        # the model's value in metric labels: ``model`` when it is known (see Inference)
        self.label = model if label is None else label
        self.principal = principal
        self.stream = stream
        self.started = time.perf_counter()
        self.ttft: float | None = None
        self._replica: str | None = None
        self.attempts = 0  # replicas tried (the router names each: ``replica``)
        self.reservation: Reservation | None = None
        self.request_id = request_id_var.get()
        # the HTTP request's ASGI scope (client address, headers) for the request log
        self.scope: Mapping[str, Any] | None = request_scope.get()
        self.images: int | None = None  # image generation only: pictures and steps made
        self.steps: int | None = None
        self.image_units: int | None = None
        self.span: Any = None  # its trace span, when the process traces (inference_tracing)
        # for fair queueing at a model at capacity: whose turn it takes, and its class (a
        # job's or batch line's waits behind every interactive request)
        self.flow = principal.key_id or ""
        self.flow_name = principal.name
        self.flow_weight = principal.queue_weight
        self.group = "" if principal.team_id is None else str(principal.team_id)
        self.group_weight = principal.team_queue_weight
        self.priority: Priority = "batch" if batch else "interactive"
        # a key with ``log_bodies`` only: the request, and the answer (a stream's chunks, an
        # error's object), for the request log (``inferd.request_bodies``)
        self.request_body: Any = None
        self.response_body: Any = None

    @property
    def replica(self) -> str | None:
        """The replica that served the call (the last one tried)."""
        return self._replica

    @replica.setter
    def replica(self, value: str | None) -> None:
        """The router names each replica it tries: counted in ``attempts``."""
        self._replica = value
        self.attempts += 1

    def assume_replica(self, replica: str | None) -> None:
        """Name the replica of a call the router did not route (not counted as tried)."""
        self._replica = replica

    def may_use(self, model: str) -> bool:
        """Whether the caller's key may use ``model`` (the router skips other fallbacks)."""
        return self.principal.may_use(model)


def replica_states(router: Router) -> list[ReplicaState]:
    """The router's replicas as the metrics export them."""
    now = time.time()
    states = []
    for r in router.replicas():
        fresh = r.load_read_at is not None and now - r.load_read_at <= r.load_ttl
        states.append(ReplicaState(
            id=r.id, model=r.model, healthy=r.healthy, in_flight=r.in_flight,
            failures=r.failures, cooldown_until=r.cooldown_until,
            running=r.running if fresh else None, waiting=r.waiting if fresh else None,
            kv_cache_usage=r.kv_cache_usage if fresh else None))
    return states


class Metering:
    """Metrics, the usage recorder and the usage store of one process."""

    def __init__(self, store: UsageStore, recorder: UsageRecorder, *,
                 metrics: Metrics | None = None, log_requests: bool = False,
                 prices: PriceBook | None = None, requests: RequestLog | None = None) -> None:
        self.store = store
        # one record per request (``inferd.reqlog``); without one, none is kept
        self.requests = requests or RequestLog(None, None)
        # every model's price, as the replica catalogue last read them (``inferd.prices``)
        self.prices = prices or PriceBook()
        self.recorder = recorder
        self.metrics = metrics or Metrics()
        self.log_requests = log_requests

    @classmethod
    async def start(cls, settings: UsageSettings, db: Database, *, data_dir: Path,
                    requests: RequestLogSettings, log_requests: bool = False) -> Metering:
        """The recorder writing to ``db``, started (``close`` writes what is left), with the
        request log of ``requests``; spools live under ``data_dir``."""
        store = UsageStore(db)
        url = db.url
        recorder = UsageRecorder(
            lambda: UsageSink.open(url), flush_seconds=settings.usage_flush_seconds,
            directory=data_dir / "spool" / "usage" if settings.usage_spool else None,
            max_pending=settings.usage_max_pending,
            sync_seconds=settings.usage_spool_sync_seconds, transient=unreachable)
        request_log = await RequestLog.start(requests, settings, db, data_dir)
        self = cls(store, recorder, log_requests=log_requests, requests=request_log)
        await recorder.start()
        self.metrics.register_gauge("inferd_usage_records_pending",
                                    "Usage records waiting to be written",
                                    lambda: float(recorder.pending))
        self.metrics.register_gauge("inferd_usage_records_rejected",
                                    "Usage records the database refused (dropped and logged)",
                                    lambda: float(recorder.rejected))
        self.metrics.register_gauge("inferd_usage_records_dropped",
                                    "Usage records dropped: more than usage_max_pending waited",
                                    lambda: float(recorder.dropped + recorder.discarded))
        self.metrics.register_gauge("inferd_usage_records_replayed",
                                    "Usage records of a killed process's spool written at start",
                                    lambda: float(recorder.replayed))
        writer = request_log.writer
        if writer is not None:
            self.metrics.register_gauge("inferd_request_log_pending",
                                        "Request log records waiting to be written",
                                        lambda: float(writer.pending))
            self.metrics.register_gauge(
                "inferd_request_log_dropped",
                "Request log records dropped: refused by the database, or more than "
                "request_log_max_pending waited",
                lambda: float(writer.rejected + writer.dropped + writer.discarded))
        return self

    async def close(self) -> None:
        await self.recorder.close()
        await self.requests.close()

    async def flushed_store(self) -> UsageStore:
        """The usage store, once the records still in the buffer are written (for readers
        that must see every request made so far)."""
        await self.recorder.flush()
        return self.store

    def watch(self, router: Router) -> None:
        """Export the router's replicas (health, load, failures) as gauges."""
        self.metrics.register_replicas(lambda: replica_states(router))

    def finish(self, call: Call, usage: Usage | None, status: int,
               error: str | None) -> None:
        """Record a finished call: metrics, one usage record, and its log line."""
        latency = time.perf_counter() - call.started
        prompt = completion = 0
        if usage is not None:
            prompt = usage.prompt_tokens
            completion = usage.completion_tokens or 0
        model, metrics = call.label, self.metrics
        metrics.child("requests", model, call.endpoint, str(status)).inc()
        metrics.child("latency", model, call.endpoint).observe(latency)
        ttft = None
        if call.ttft is not None:
            ttft = call.ttft - call.started
            metrics.child("ttft", model).observe(ttft)
        if prompt:
            metrics.child("tokens", model, "prompt").inc(prompt)
        if completion:
            metrics.child("tokens", model, "completion").inc(completion)
        key_id = call.principal.key_id
        if call.principal.metered:  # else the gateway that forwarded it records it
            now = time.time()
            latency_ms = latency * 1000.0
            ttft_ms = None if ttft is None else ttft * 1000.0
            cost = self.prices.cost(call.model, call.replica, usage, call.images, call.steps)
            self.recorder.record(UsageRecord(
                now, call.request_id, key_id, call.model, call.replica, call.endpoint,
                call.stream, status, error, prompt, completion, prompt + completion,
                latency_ms, ttft_ms, call.images, call.steps, call.image_units, cost))
            if self.requests.enabled:
                self._log_request(call, usage, status, error, now, latency_ms, ttft_ms,
                                  prompt, completion, cost)
        level = logging.WARNING if status >= 500 else logging.INFO
        if error in ("rate_limit_exceeded", "queue_timeout") and in_job():  # deferred, not answered
            level = logging.DEBUG
        if self.log_requests or status >= 500:
            log.log(level,
                    "%s %s %d", call.endpoint, call.model, status, extra={
                        "key_id": key_id, "model": call.model, "endpoint": call.endpoint,
                        "status": status, "error": error, "prompt_tokens": prompt,
                        "completion_tokens": completion, "stream": call.stream,
                        "latency_ms": round(latency * 1000.0, 3)})

    def _log_request(self, call: Call, usage: Usage | None, status: int,
                     error: str | None, now: float, latency_ms: float, ttft_ms: float | None,
                     prompt: int, completion: int, cost: float) -> None:
        cached = None
        if usage is not None and usage.prompt_tokens_details is not None:
            cached = usage.prompt_tokens_details.cached_tokens
        address, agent, trace = client_of(call.scope)
        if call.span is not None:  # traced here: the trace this request's span is in
            context = call.span.get_span_context()
            if context.is_valid:
                trace = format(context.trace_id, "032x")
        principal = call.principal
        asked = answered = None
        if principal.log_bodies:
            asked, answered = self.requests.bodies(call.request_body, call.response_body)
        # ``_make`` (tuple.__new__) is several times cheaper than the keyword-checking
        # constructor: this runs on every request
        self.requests.record(RequestRecord._make((
            now, call.request_id, principal.key_id, principal.name[:200] or None,
            call.model[:191], call.replica, call.endpoint, call.stream, status, error,
            latency_ms, ttft_ms, prompt, completion, cached, cost, min(call.attempts, 32767),
            address, agent, trace, asked, answered, principal.user_id, principal.team_id)))
