"""The metrics the dashboards read: labelled gauge families and refreshes read at scrape time,
and the streaming latencies (time to first token, inter-token latency) of a request."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest

from inferd import inference as inference_module
from inferd import metering as metering_module
from inferd import metrics as metrics_module
from inferd.auth.principal import OPEN_MODE
from inferd.engines.echo import EchoEngine
from inferd.engines.local import Generation
from inferd.inference import Inference
from inferd.metering import Metering
from inferd.metrics import Metrics
from inferd.routing.router import Replica, Router
from inferd.schemas.openai import ChatCompletionRequest
from inferd.settings import ModelSpec
from inferd.usage import UsageRecorder
from tests.memory_sink import MemorySink, opener


def test_labelled_families_are_read_at_each_scrape() -> None:
    metrics = Metrics()
    depth = {"a": 2.0, "b": 0.0}
    metrics.register_family(
        "inferd_things",
        "Things per model",
        ["model"],
        lambda: [((name,), value) for name, value in depth.items()],
    )
    metrics.register_family("inferd_broken_family", "A failing callback", ["model"], lambda: 1 / 0)  # type: ignore[arg-type,return-value]
    text = metrics.render().decode()
    assert 'inferd_things{model="a"} 2.0' in text
    assert 'inferd_things{model="b"} 0.0' in text
    assert "inferd_broken_family" not in text  # skipped, the scrape still works
    depth["a"] = 5.0
    assert 'inferd_things{model="a"} 5.0' in metrics.render().decode()


async def test_refreshes_run_before_a_scrape_and_never_break_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    metrics = Metrics()
    value = {"n": 0.0}
    started = asyncio.Event()

    async def refresh() -> None:
        value["n"] += 1

    async def failing() -> None:
        raise ConnectionError("database is down")

    async def stuck() -> None:
        started.set()
        await asyncio.Event().wait()

    monkeypatch.setattr(metrics_module, "REFRESH_TIMEOUT", 0.01)
    metrics.register_refresh(failing)
    metrics.register_refresh(stuck)
    metrics.register_refresh(refresh)
    metrics.register_gauge("inferd_refreshed", "Refreshes run", lambda: value["n"])
    assert "inferd_refreshed 1.0" in (await metrics.render_off_loop()).decode()
    assert started.is_set()
    assert "inferd_refreshed 2.0" in (await metrics.render_off_loop()).decode()
    assert "inferd_refreshed 2.0" in metrics.render().decode()  # render() does not refresh


class Clock:
    """``time.perf_counter`` of the code under test, moved by the test's engine."""

    def __init__(self) -> None:
        self.now = 100.0

    def perf_counter(self) -> float:
        return self.now


class PacedEcho(EchoEngine):
    """Echo whose words come ``steps`` seconds apart on ``clock`` (the first after the role
    chunk the stream opens with)."""

    def __init__(self, clock: Clock, steps: list[float]) -> None:
        super().__init__(ModelSpec(name="paced", kind="echo"))
        self.clock, self.steps = clock, steps

    async def generate(self, generation: Generation, stream: bool = True) -> AsyncIterator[str]:
        words = super().generate(generation, stream)
        for step in self.steps:
            self.clock.now += step
            yield await anext(words)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    fake = SimpleNamespace(perf_counter=clock.perf_counter, time=time.time)
    monkeypatch.setattr(inference_module, "time", fake)
    monkeypatch.setattr(metering_module, "time", fake)
    return clock


@pytest.fixture
async def paced(clock: Clock) -> AsyncIterator[tuple[Inference, Metering, MemorySink]]:
    """An inference over the paced engine (2 s to the first token, then 0.5 s and 0.25 s),
    its metering, and the store its usage records reach."""
    router = Router()
    router.add(Replica(id="local:paced", model="paced",
                       engine=PacedEcho(clock, [2.0, 0.5, 0.25])))
    store = MemorySink()
    recorder = UsageRecorder(opener(store), flush_seconds=3600)
    await recorder.start()
    metering = Metering(None, recorder)  # type: ignore[arg-type]
    yield Inference(router, metering), metering, store
    await recorder.close()


def _request(stream: bool) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {
            "model": "paced",
            "stream": stream,
            "messages": [{"role": "user", "content": "one two three"}],
        }
    )


def _sample(metering: Metering, name: str) -> Any:
    return metering.metrics.registry.get_sample_value(name, {"model": "paced"})


async def test_a_stream_times_its_first_token_and_the_gaps_between_tokens(
        paced: tuple[Inference, Metering, MemorySink]) -> None:
    """The time to first token runs to the first chunk with generated text (not to the role
    chunk a stream opens with); each later chunk with text adds its gap to the inter-token
    latency."""
    inference, metering, store = paced
    stream = await inference.chat_stream(_request(True), OPEN_MODE)
    texts = [c["choices"][0]["delta"].get("content") async for c in stream if c["choices"]]
    assert "".join(t or "" for t in texts) == "one two three"
    assert _sample(metering, "inferd_time_to_first_token_seconds_count") == 1
    assert _sample(metering, "inferd_time_to_first_token_seconds_sum") == 2.0
    assert _sample(metering, "inferd_inter_token_latency_seconds_count") == 2
    assert _sample(metering, "inferd_inter_token_latency_seconds_sum") == 0.75
    # cumulative buckets, a gap equal to a bound counted in it (0.25 <= 0.3, 0.5 <= 0.5)
    buckets = {
        le: metering.metrics.registry.get_sample_value(
            "inferd_inter_token_latency_seconds_bucket", {"model": "paced", "le": le}
        )
        for le in ("0.2", "0.3", "0.5", "1.0", "+Inf")
    }
    assert buckets == {"0.2": 0, "0.3": 1, "0.5": 2, "1.0": 2, "+Inf": 2}
    await metering.recorder.close()  # writes what is pending
    assert [r.ttft_ms for r in store.records] == [2000.0]


async def test_an_answer_in_one_piece_has_no_token_timings(
        paced: tuple[Inference, Metering, MemorySink]) -> None:
    inference, metering, _ = paced
    answer = await inference.chat(_request(False), OPEN_MODE)
    assert answer.choices[0].message.content == "one two three"
    assert _sample(metering, "inferd_time_to_first_token_seconds_count") is None
    assert _sample(metering, "inferd_inter_token_latency_seconds_count") is None
    assert (
        metering.metrics.registry.get_sample_value(
            "inferd_requests_total", {"model": "paced", "endpoint": "chat", "status": "200"}
        )
        == 1
    )
