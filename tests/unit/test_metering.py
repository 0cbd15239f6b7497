"""The usage recorder's batching and retries, and the metrics callback registry."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from inferd.metrics import Metrics, ReplicaState
from inferd.usage import UsageRecorder


class FlakyStore:
    """Collects batches; fails the first ``failures`` writes (like a database that is down)."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.batches: list[list[Any]] = []

    async def write(self, records: Sequence[tuple[Any, ...]]) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("database is down")
        self.batches.append(list(records))


async def test_n_records_are_written_in_few_batches() -> None:
    store = FlakyStore()
    recorder = UsageRecorder(store.write, flush_seconds=3600, batch_size=1000)
    for i in range(2500):
        recorder.record((i,))
    assert store.batches == []  # nothing written on the request path
    await recorder.close()
    assert [len(b) for b in store.batches] == [1000, 1000, 500]
    assert [r[0] for b in store.batches for r in b] == list(range(2500))


async def test_failed_write_keeps_records_for_the_next_flush() -> None:
    store = FlakyStore(failures=1)
    recorder = UsageRecorder(store.write, flush_seconds=3600)
    for i in range(10):
        recorder.record((i,))
    assert await recorder.flush() == 0 and recorder.pending == 10
    recorder.record((10,))
    assert await recorder.flush() == 11
    assert [r[0] for r in store.batches[0]] == list(range(11))


async def test_buffer_is_bounded_while_the_store_is_down() -> None:
    store = FlakyStore(failures=5)
    recorder = UsageRecorder(store.write, flush_seconds=3600, max_buffer=5)
    for i in range(8):
        recorder.record((i,))
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


async def test_a_stream_dropped_before_it_is_read_is_still_metered(tmp_path: Any) -> None:
    """A client that leaves before the response starts: the stream is never iterated, yet its
    usage record is written and the in-flight gauge goes back down."""
    import asyncio
    import gc

    from inferd.engines.echo import EchoEngine
    from inferd.inference import Inference
    from inferd.metering import Metering
    from inferd.routing.router import Replica, Router
    from inferd.schemas.openai import ChatCompletionRequest
    from inferd.settings import ModelSpec, load_settings
    from inferd.store.db import Database

    settings = load_settings(data_dir=tmp_path, bundled_models=False)
    db = Database(settings.resolved_database_url())
    await db.migrate()
    router = Router()
    router.add(Replica(id="local:echo", model="echo",
                       engine=EchoEngine(ModelSpec(name="echo", kind="echo"))))
    metering = await Metering.start(settings, db)
    inference = Inference(router, metering)
    in_flight = metering.metrics.child("in_flight", "echo")
    try:
        before = metering.recorder.pending
        stream = await inference.chat_stream(ChatCompletionRequest.model_validate(
            {"model": "echo", "messages": [{"role": "user", "content": "a b c"}]}))
        assert in_flight._value.get() == 1
        del stream
        gc.collect()
        for _ in range(20):
            await asyncio.sleep(0.01)
        assert metering.recorder.pending == before + 1
        assert in_flight._value.get() == 0
    finally:
        await inference.close()
        await metering.close()
        await db.close()
