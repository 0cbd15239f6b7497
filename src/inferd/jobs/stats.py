"""The job-queue metrics: pending jobs and the age of the oldest one, per model.

They are read from the database (the jobs table is the queue's truth: a job is a row before
it is acknowledged, whichever broker carries its id), when ``/metrics`` is scraped and at most
every ``every`` seconds, so their cost does not grow with the request rate. Every process that
shares the database reports the same figures: dashboards take ``max by (model)``.

Label values are the models the router knows (each with a series, 0 when none is pending), and
``UNKNOWN_MODEL`` for jobs of any other name: clients cannot add series.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from inferd.metrics import UNKNOWN_MODEL, Metrics, Series, StoreReading
from inferd.routing.router import Router
from inferd.store.jobs import JobStore

REFRESH_EVERY = 5.0


class QueueStats:
    """Pending jobs per model, as the metrics ``inferd_jobs_pending`` and
    ``inferd_jobs_oldest_pending_age_seconds`` show them."""

    def __init__(self, store: JobStore, router: Router, every: float = REFRESH_EVERY,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.router = router
        self.counts = StoreReading(lambda: self.store.pending_by_model(), every, clock)

    def register(self, metrics: Metrics) -> None:
        metrics.register_refresh(self.counts.refresh)
        metrics.register_family(
            "inferd_jobs_pending",
            "Jobs waiting to run (pending in the database), per model",
            ["model"],
            self.pending,
        )
        metrics.register_family(
            "inferd_jobs_oldest_pending_age_seconds",
            "Seconds the oldest pending job of the model has waited since "
            "it was submitted (0 when none is pending)",
            ["model"],
            self.oldest_age,
        )

    def by_label(self) -> dict[str, tuple[int, float | None]]:
        """Per label value: pending jobs and the creation time of the oldest (None: none)."""
        counts = self.counts.value
        if counts is None:
            return {}
        out: dict[str, tuple[int, float | None]] = {
            e.name: (0, None) for e in self.router.entries()
        }
        for model, (count, oldest) in counts.items():
            label = self.router.resolve(model) if self.router.knows(model) else UNKNOWN_MODEL
            had, first = out.get(label, (0, None))
            out[label] = (had + count, oldest if first is None else min(first, oldest))
        return out

    def pending(self) -> Series:
        return [((label,), float(count)) for label, (count, _) in self.by_label().items()]

    def oldest_age(self) -> Series:
        now = time.time()
        return [
            ((label,), 0.0 if oldest is None else max(0.0, now - oldest))
            for label, (_, oldest) in self.by_label().items()
        ]
