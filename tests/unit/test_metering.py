"""The usage recorder's records, the metrics callback registry, bounded metric labels and
rendering off the event loop (the recorder's batching: ``test_batchwriter``)."""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

import pytest

from inferd import metrics as metrics_module
from inferd.audit import request_scope
from inferd.auth.principal import OPEN_MODE
from inferd.batchwriter import SpooledWriter
from inferd.engines.echo import EchoEngine
from inferd.errors import ModelNotFound, UpstreamUnavailable
from inferd.inference import Inference
from inferd.metering import Metering
from inferd.metrics import Metrics, ReplicaState
from inferd.reqlog import RequestLog
from inferd.routing.router import Replica, Router
from inferd.schemas.openai import ChatCompletionRequest
from inferd.settings import ModelSpec
from inferd.store.request_log import RequestRecord
from inferd.store.tables_control import usage_records
from inferd.store.tables_requests import request_log
from inferd.usage import UsageRecord, UsageRecorder
from tests.memory_sink import MemorySink, opener


def _record(i: int) -> UsageRecord:
    """A record told apart by its ``created_at``."""
    return UsageRecord(float(i), None, None, "m", None, "chat", False, 200, None, 0, 0, 0,
                       1.0, None, None, None)


def test_registered_gauges_and_replica_states_are_scraped() -> None:
    metrics = Metrics()
    metrics.register_gauge("inferd_queue_depth", "Jobs waiting", lambda: 7)
    metrics.register_gauge("inferd_broken", "A failing callback", lambda: 1 / 0)
    metrics.register_replicas(lambda: [
        ReplicaState(id="r1", model="m", healthy=True, in_flight=2, running=5, waiting=1,
                     kv_cache_usage=0.5),
        ReplicaState(id="r2", model="m", healthy=False, cooldown_until=9e12, failures=3)])
    metrics.child("requests", "m", "chat", "200").inc()
    text = metrics.render().decode()
    assert "inferd_queue_depth 7.0" in text
    assert "inferd_broken" not in text  # skipped, the scrape still works
    assert 'inferd_replica_healthy{model="m",replica="r1"} 1.0' in text
    assert 'inferd_replica_healthy{model="m",replica="r2"} 0.0' in text
    assert 'inferd_replica_in_flight{model="m",replica="r1"} 2.0' in text
    assert 'inferd_replica_consecutive_failures{model="m",replica="r2"} 3.0' in text
    # the load r1's engine reports; r2 has none read, so no series
    assert 'inferd_replica_running{model="m",replica="r1"} 5.0' in text
    assert 'inferd_replica_waiting{model="m",replica="r1"} 1.0' in text
    assert 'inferd_replica_kv_cache_usage{model="m",replica="r1"} 0.5' in text
    assert 'inferd_replica_running{model="m",replica="r2"}' not in text
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
    store = MemorySink()
    recorder = UsageRecorder(opener(store), flush_seconds=3600)
    await recorder.start()
    metering = Metering(None, recorder)  # type: ignore[arg-type]
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
    await metering.recorder.close()
    assert {r.model for r in store.records} >= set(names)


def _chat(model: str) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": model, "messages": [{"role": "user", "content": "a b"}]})


class _Down(EchoEngine):
    """An engine whose every answer fails before it starts (the router tries another)."""

    async def chat(self, request: ChatCompletionRequest) -> dict[str, Any]:
        raise UpstreamUnavailable("connection refused")


async def test_the_request_log_record_counts_replicas_tried_and_reads_the_http_request(
) -> None:
    """Each finished call leaves one request log record: the replicas the router tried (a
    fallback after a failed replica counts), and the client address, user agent and trace id of the
    HTTP request it was made on; a gateway's forwarded (unmetered) call leaves none."""
    router = Router()
    router.add(Replica(id="down", model="echo", engine=_Down(ModelSpec(name="echo",
                                                                       kind="echo"))))
    router.add(Replica(id="up", model="spare",
                       engine=EchoEngine(ModelSpec(name="spare", kind="echo"))))
    router.set_model("echo", fallbacks=["spare"])  # its one replica fails: the fallback answers
    log_sink, usage_sink = MemorySink(), MemorySink()
    writer: SpooledWriter[RequestRecord] = SpooledWriter(
        opener(log_sink), decode=lambda f: RequestRecord(*f), flush_seconds=3600)
    await writer.start()
    recorder = UsageRecorder(opener(usage_sink), flush_seconds=3600)
    await recorder.start()
    metering = Metering(None, recorder, requests=RequestLog(None, writer))  # type: ignore[arg-type]
    inference = Inference(router, metering)
    scope = {"type": "http", "client": ("10.1.2.3", 5555), "headers": [
        (b"user-agent", b"test-agent/2"),
        (b"traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")]}
    token = request_scope.set(scope)
    try:
        await inference.chat(_chat("echo"), OPEN_MODE)
        await inference.chat(_chat("spare"), OPEN_MODE)
    finally:
        request_scope.reset(token)
    await inference.chat(_chat("echo"), dataclasses.replace(OPEN_MODE, metered=False))
    await metering.close()
    assert len(log_sink.records) == 2 == len(usage_sink.records)
    fell_back, direct = log_sink.records
    assert (fell_back.model, fell_back.replica, fell_back.attempts) == ("echo", "up", 2)
    assert (direct.model, direct.replica, direct.attempts) == ("spare", "up", 1)
    assert fell_back.status == direct.status == 200
    for record in log_sink.records:
        assert record.client_address == "10.1.2.3" and record.user_agent == "test-agent/2"
        assert record.trace_id == "0af7651916cd43dd8448eb211c80319c"
        assert record.prompt_tokens > 0 and record.completion_tokens > 0


def test_a_request_record_has_one_field_per_column_of_the_request_log() -> None:
    assert RequestRecord._fields == tuple(c.name for c in request_log.columns if c.name != "id")
