"""The usage recorder's batching and retries, and the metrics callback registry."""

from __future__ import annotations

from collections.abc import Sequence

from inferd.metrics import Metrics, ReplicaState
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
