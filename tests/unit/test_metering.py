"""The usage recorder's batching and retries, the metrics callback registry, bounded metric
labels and rendering off the event loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

import pytest

from inferd import metrics as metrics_module
from inferd.auth.principal import OPEN_MODE
from inferd.engines.echo import EchoEngine
from inferd.errors import ModelNotFound
from inferd.inference import Inference
from inferd.metering import Metering
from inferd.metrics import Metrics, ReplicaState
from inferd.routing.router import Replica, Router
from inferd.schemas.openai import ChatCompletionRequest
from inferd.settings import ModelSpec
from inferd.store.tables_control import usage_records
from inferd.usage import UsageRecord, UsageRecorder


def _record(i: int) -> UsageRecord:
    """A record told apart by its ``created_at``."""
    return UsageRecord(float(i), None, None, "m", None, "chat", False, 200, None, 0, 0, 0,
                       1.0, None, None, None)


class FlakyStore:
    """Collects batches; fails the first ``failures`` writes (like a database that is down)."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.batches: list[list[UsageRecord]] = []

    async def write(self, records: Sequence[UsageRecord]) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("database is down")
        self.batches.append(list(records))


async def test_n_records_are_written_in_few_batches() -> None:
    store = FlakyStore()
    recorder = UsageRecorder(store.write, flush_seconds=3600, batch_size=1000)
    for i in range(2500):
        recorder.record(_record(i))
    assert store.batches == []  # nothing written on the request path
    await recorder.close()
    assert [len(b) for b in store.batches] == [1000, 1000, 500]
    assert [r.created_at for b in store.batches for r in b] == list(range(2500))


async def test_records_being_written_are_still_pending_until_the_write_ends() -> None:
    """``pending`` (the ``inferd_usage_records_pending`` gauge) counts what is not durable yet:
    a batch taken from the buffer stays pending while its write runs."""
    started, release = asyncio.Event(), asyncio.Event()
    written: list[UsageRecord] = []

    async def slow_write(records: Sequence[UsageRecord]) -> None:
        started.set()
        await release.wait()
        written.extend(records)

    recorder = UsageRecorder(slow_write, flush_seconds=3600)
    for i in range(5):
        recorder.record(_record(i))
    flush = asyncio.create_task(recorder.flush())
    await started.wait()
    recorder.record(_record(5))
    assert recorder.pending == 6  # five being written, one buffered
    release.set()
    assert await flush == 5
    assert recorder.pending == 1 and len(written) == 5


async def test_each_chunk_written_stops_being_pending_at_once() -> None:
    """In a flush of several chunks, a chunk written is no longer pending while the next
    ones are still being written."""
    seen: list[int] = []
    recorder: UsageRecorder

    async def write(records: Sequence[UsageRecord]) -> None:
        seen.append(recorder.pending)

    recorder = UsageRecorder(write, flush_seconds=3600, batch_size=10)
    for i in range(25):
        recorder.record(_record(i))
    assert await recorder.flush() == 25
    assert seen == [25, 15, 5] and recorder.pending == 0


async def test_failed_write_keeps_records_for_the_next_flush() -> None:
    store = FlakyStore(failures=1)
    recorder = UsageRecorder(store.write, flush_seconds=3600)
    for i in range(10):
        recorder.record(_record(i))
    assert await recorder.flush() == 0 and recorder.pending == 10
    recorder.record(_record(10))
    assert await recorder.flush() == 11
    assert [r.created_at for r in store.batches[0]] == list(range(11))


async def test_buffer_is_bounded_while_the_store_is_down() -> None:
    store = FlakyStore(failures=5)
    recorder = UsageRecorder(store.write, flush_seconds=3600, max_buffer=5)
    for i in range(8):
        recorder.record(_record(i))
    await recorder.flush()
    assert recorder.pending == 5 and recorder.dropped == 3


def test_registered_gauges_and_replica_states_are_scraped() -> None:
    metrics = Metrics()
    metrics.register_gauge("inferd_queue_depth", "Jobs waiting", lambda: 7)
    metrics.register_gauge("inferd_broken", "A failing callback", lambda: 1 / 0)
    metrics.register_replicas(lambda: [
        ReplicaState(id="r1", model="m", healthy=True, in_flight=2),
        ReplicaState(id="r2", model="m", healthy=False, cooldown_until=9e12, failures=3)])
    metrics.child("requests", "m", "chat", "200").inc()
    text = metrics.render().decode()
    assert "inferd_queue_depth 7.0" in text
    assert "inferd_broken" not in text  # skipped, the scrape still works
    assert 'inferd_replica_healthy{model="m",replica="r1"} 1.0' in text
    assert 'inferd_replica_healthy{model="m",replica="r2"} 0.0' in text
    assert 'inferd_replica_in_flight{model="m",replica="r1"} 2.0' in text
    assert 'inferd_replica_consecutive_failures{model="m",replica="r2"} 3.0' in text
    assert 'inferd_requests_total{endpoint="chat",model="m",status="200"} 1.0' in text


def test_a_usage_record_has_one_field_per_column_of_the_usage_table() -> None:
    assert UsageRecord._fields == tuple(c.name for c in usage_records.columns if c.name != "id")


async def test_metrics_are_rendered_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """The exposition text is built in a worker thread; the registered callbacks (which read
    the loop's state) still run on the loop."""
    rendered_in: list[int] = []
    read_in: list[int] = []
    real = metrics_module.generate_latest

    def spy(registry: Any) -> bytes:
        rendered_in.append(threading.get_ident())
        return real(registry)

    monkeypatch.setattr(metrics_module, "generate_latest", spy)
    metrics = Metrics()
    metrics.register_gauge("inferd_queue_depth", "Jobs waiting",
                           lambda: read_in.append(threading.get_ident()) or 3)
    metrics.child("requests", "m", "chat", "200").inc()
    text = (await metrics.render_off_loop()).decode()
    assert "inferd_queue_depth 3.0" in text
    assert 'inferd_requests_total{endpoint="chat",model="m",status="200"} 1.0' in text
    loop_thread = threading.get_ident()
    assert rendered_in and loop_thread not in rendered_in
    assert read_in == [loop_thread]


async def test_unknown_model_names_are_one_label() -> None:
    """A request for a model the router does not know is counted under ``_unknown``: clients
    cannot add label values (series) to the metrics."""
    router = Router()
    router.add(Replica(id="local:echo", model="echo",
                       engine=EchoEngine(ModelSpec(name="echo", kind="echo"))),
               aliases=["echo-alias"])
    store = FlakyStore()
    metering = Metering(None, UsageRecorder(store.write, flush_seconds=3600))  # type: ignore[arg-type]
    inference = Inference(router, metering)
    names = [f"made-up-{i}" for i in range(50)]
    for name in names:
        with pytest.raises(ModelNotFound):
            await inference.chat(_chat(name), OPEN_MODE)
    await inference.chat(_chat("echo"), OPEN_MODE)
    await inference.chat(_chat("echo-alias"), OPEN_MODE)
    text = metering.metrics.render().decode()
    assert not any(name in text for name in names)
    assert ('inferd_requests_total{endpoint="chat",model="_unknown",status="404"} 50.0'
            in text)
    assert 'inferd_requests_total{endpoint="chat",model="echo",status="200"} 1.0' in text
    assert 'inferd_requests_total{endpoint="chat",model="echo-alias",status="200"} 1.0' in text
    assert 'inferd_requests_in_flight{model="_unknown"} 0.0' in text
    # the usage records keep the name that was asked for
    await metering.recorder.flush()
    assert {r.model for batch in store.batches for r in batch} >= set(names)


def _chat(model: str) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": model, "messages": [{"role": "user", "content": "a b"}]})
