"""The job-queue metrics: pending jobs and the age of the oldest per model, from the database,
with a bounded set of label values."""

from __future__ import annotations

import time

from inferd.engines.echo import EchoEngine
from inferd.ids import new_id
from inferd.jobs.stats import QueueStats
from inferd.metrics import Metrics
from inferd.routing.router import Replica
from inferd.settings import ModelSpec
from inferd.store.jobs import JobRecord, JobStore
from tests.unit.jobs.conftest import Parts, add_echo


def _job(model: str, created_at: float, status: str = "pending") -> JobRecord:
    return JobRecord(
        id=new_id("job"),
        endpoint="/v1/chat/completions",
        model=model,
        request={},
        request_hash="h",
        status=status,
        created_at=created_at,
    )


def _series(text: str, name: str) -> dict[str, float]:
    """``{model: value}`` of one family in the exposition text."""
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels, value = line.rsplit(" ", 1)
            out[labels.split('model="', 1)[1].split('"', 1)[0]] = float(value)
    return out


async def test_pending_jobs_and_the_oldest_age_per_model(parts: Parts) -> None:
    parts.router.add(
        Replica(
            id="local:other", model="other", engine=EchoEngine(ModelSpec(name="other", kind="echo"))
        ),
        aliases=["other-alias"],
    )
    add_echo(parts.router, "idle")
    store = JobStore(parts.db)
    now = time.time()
    await store.insert(_job("echo", now - 100))
    await store.insert(_job("echo", now - 10))
    await store.insert(_job("other-alias", now - 30))  # counted under its model's name
    await store.insert(_job("echo", now - 1000, status="running"))
    await store.insert(_job("echo", now - 2000, status="completed"))
    names = [f"made-up-{i}" for i in range(20)]  # models the router does not know
    for i, name in enumerate(names):
        await store.insert(_job(name, now - 50 - i))
    metrics = Metrics()
    QueueStats(store, parts.router, every=0).register(metrics)
    before = time.time()
    text = (await metrics.render_off_loop()).decode()
    after = time.time()
    assert not any(name in text for name in names)
    assert "other-alias" not in text
    assert _series(text, "inferd_jobs_pending") == {
        "echo": 2.0,
        "other": 1.0,
        "idle": 0.0,
        "_unknown": 20.0,
    }
    ages = _series(text, "inferd_jobs_oldest_pending_age_seconds")
    assert set(ages) == {"echo", "other", "idle", "_unknown"}
    assert ages["idle"] == 0.0
    # the oldest pending job of each: created 100 s, 30 s and 50 + 19 s before ``now``
    for model, created in (("echo", now - 100), ("other", now - 30), ("_unknown", now - 69)):
        assert before - created <= ages[model] <= after - created, model


async def test_counts_are_read_at_most_every_few_seconds(parts: Parts) -> None:
    clock = {"now": 1000.0}
    store = JobStore(parts.db)
    metrics = Metrics()
    QueueStats(store, parts.router, every=5.0, clock=lambda: clock["now"]).register(metrics)
    assert _series((await metrics.render_off_loop()).decode(), "inferd_jobs_pending") == {
        "echo": 0.0
    }
    await store.insert(_job("echo", time.time()))
    clock["now"] += 4.0
    assert _series((await metrics.render_off_loop()).decode(), "inferd_jobs_pending") == {
        "echo": 0.0
    }
    clock["now"] += 1.0
    assert _series((await metrics.render_off_loop()).decode(), "inferd_jobs_pending") == {
        "echo": 1.0
    }


async def test_a_failed_read_leaves_no_stale_figures(parts: Parts) -> None:
    store = JobStore(parts.db)
    stats = QueueStats(store, parts.router, every=0)
    metrics = Metrics()
    stats.register(metrics)
    await store.insert(_job("echo", time.time()))
    assert "inferd_jobs_pending{" in (await metrics.render_off_loop()).decode()

    async def down() -> dict[str, tuple[int, float]]:
        raise ConnectionError("database is down")

    store.pending_by_model = down  # type: ignore[method-assign]
    text = (await metrics.render_off_loop()).decode()
    assert "inferd_jobs_pending{" not in text
    assert "inferd_jobs_oldest_pending_age_seconds{" not in text
