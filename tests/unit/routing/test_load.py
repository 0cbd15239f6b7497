"""Reading a replica's load from its engine's metrics, and the router's use of it.

The samples are written in each engine's exposition format (metric names, types and labels as
their documentation gives them), next to series of other types that must be ignored.
"""

from __future__ import annotations

import time

import pytest
from pydantic import ValidationError

from inferd.engines.echo import EchoEngine
from inferd.routing import affinity
from inferd.routing.load import FORMATS, Load, detect, parse
from inferd.routing.replica import Replica
from inferd.routing.router import Router
from inferd.settings import METRICS_FORMATS, ModelSpec, ReplicaSpec

VLLM = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 7.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 3.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.42
# HELP vllm:prompt_tokens_total Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 1234.0
# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.001",model_name="m"} 0.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf",model_name="m"} 5.0
vllm:time_to_first_token_seconds_count{engine="0",model_name="m"} 5.0
vllm:time_to_first_token_seconds_sum{engine="0",model_name="m"} 0.8
"""

VLLM_V0 = """\
# HELP vllm:num_requests_running Number of requests currently running on GPU.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="a"} 2.0
vllm:num_requests_running{model_name="b"} 5.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="a"} 1.0
vllm:num_requests_waiting{model_name="b"} 4.0
# HELP vllm:gpu_cache_usage_perc GPU KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{model_name="a"} 0.25
vllm:gpu_cache_usage_perc{model_name="b"} 0.75
"""

SGLANG = """\
# HELP sglang:prompt_tokens_total Number of prefill tokens processed.
# TYPE sglang:prompt_tokens_total counter
sglang:prompt_tokens_total{model_name="meta-llama/Llama-3.1-8B-Instruct"} 8.128902e+06
# HELP sglang:num_running_reqs The number of running requests.
# TYPE sglang:num_running_reqs gauge
sglang:num_running_reqs{model_name="meta-llama/Llama-3.1-8B-Instruct"} 12.0
# HELP sglang:num_queue_reqs The number of requests in the waiting queue.
# TYPE sglang:num_queue_reqs gauge
sglang:num_queue_reqs{model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.0
# HELP sglang:token_usage The token usage.
# TYPE sglang:token_usage gauge
sglang:token_usage{model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.28
"""

LLAMACPP = """\
# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed.
# TYPE llamacpp:prompt_tokens_total counter
llamacpp:prompt_tokens_total 512
# HELP llamacpp:kv_cache_usage_ratio KV-cache usage. 1 means 100 percent usage.
# TYPE llamacpp:kv_cache_usage_ratio gauge
llamacpp:kv_cache_usage_ratio 0.125
# HELP llamacpp:requests_processing Number of requests processing.
# TYPE llamacpp:requests_processing gauge
llamacpp:requests_processing 2
# HELP llamacpp:requests_deferred Number of requests deferred.
# TYPE llamacpp:requests_deferred gauge
llamacpp:requests_deferred 6
"""

INFERD = """\
# HELP inferd_requests_in_flight Inference requests under way
# TYPE inferd_requests_in_flight gauge
inferd_requests_in_flight{model="smollm2"} 1.0
# HELP inferd_replica_in_flight Requests in flight on a replica
# TYPE inferd_replica_in_flight gauge
inferd_replica_in_flight{model="smollm2",replica="local"} 3.0
inferd_replica_in_flight{model="other",replica="local"} 9.0
# HELP inferd_requests_total Requests
# TYPE inferd_requests_total counter
inferd_requests_total{model="smollm2",status="200"} 10.0
"""


@pytest.mark.parametrize(
    ("text", "fmt", "model", "expected"),
    [
        (VLLM, "vllm", None, Load(7, 3, 0.42)),
        (VLLM_V0, "vllm", "b", Load(5, 4, 0.75)),  # a server of several models: its own series
        (VLLM_V0, "vllm", "c", Load(7, 5, 0.75)),  # a model it does not label: the sum (max)
        (SGLANG, "sglang", "meta-llama/Llama-3.1-8B-Instruct", Load(12, 0, 0.28)),
        (LLAMACPP, "llamacpp", "whatever", Load(2, 6, 0.125)),
        (INFERD, "inferd", "smollm2", Load(3, 0, None)),
    ],
)
def test_each_format_is_read_given_or_detected(
    text: str, fmt: str, model: str | None, expected: Load
) -> None:
    assert parse(text, fmt, model) == expected
    assert parse(text, None, model) == expected
    assert (
        detect(
            name.split("{")[0].split(" ")[0]
            for name in text.splitlines()
            if not name.startswith("#")
        )
        == fmt
    )


def test_inferd_without_replica_gauges_counts_its_requests_in_flight() -> None:
    text = INFERD.split("# HELP inferd_replica_in_flight")[0]
    assert parse(text, "inferd", "smollm2") == Load(1, 0, None)


def test_metrics_without_a_known_gauge_or_of_another_format_give_nothing() -> None:
    assert (
        parse("# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 3.5\n") is None
    )
    assert parse(SGLANG, "vllm") is None
    assert parse("") is None


def test_the_formats_a_replica_may_name_are_the_parsers_and_none() -> None:
    assert (*FORMATS, "none") == METRICS_FORMATS
    assert ReplicaSpec(url="http://x/v1", options={"metrics": "sglang"}).options == {
        "metrics": "sglang"
    }
    with pytest.raises(ValidationError, match=r"options\.metrics must be one of"):
        ReplicaSpec(url="http://x/v1", options={"metrics": "prometheus"})


def test_a_page_that_is_no_exposition_gives_nothing_and_a_broken_gauge_raises() -> None:
    assert parse("<html><body>Not found</body></html>\n") is None
    with pytest.raises(ValueError):
        parse('vllm:num_requests_running{model_name="m"} many\n')


def replica(rid: str, weight: float = 1.0) -> Replica:
    return Replica(
        id=rid,
        model="m",
        engine=EchoEngine(ModelSpec(name="m", kind="echo")),
        weight=weight,
        load_ttl=5.0,
    )


def test_busy_is_the_read_load_plus_requests_sent_since_and_in_flight_when_stale() -> None:
    r = replica("a")
    r.in_flight = 2
    assert r.busy(now=100.0) == 2  # nothing read: this gateway's own count
    r.record_load(running=10, waiting=5, kv_cache_usage=0.5, now=100.0)
    assert r.busy(now=101.0) == 15
    r.in_flight = 4  # two more sent since the read
    assert r.busy(now=101.0) == 17
    r.in_flight = 0  # requests finished since the read are still in the read
    assert r.busy(now=101.0) == 15
    assert r.busy(now=105.1) == 0  # stale: the in-flight count again
    state = r.state()
    assert (state["running"], state["waiting"], state["kv_cache_usage"], state["load_read_at"]) == (
        10,
        5,
        0.5,
        100.0,
    )


def test_least_busy_picks_by_the_read_load_over_weight() -> None:
    router = Router(routing="least_busy")
    a, b, c = replica("a"), replica("b", weight=2.0), replica("c")
    for r in (a, b, c):
        router.add(r)
    c.in_flight = 1  # c publishes nothing: its own count, (1+1)/1 = 2, beats a and b below
    now = time.time()
    a.record_load(running=6, waiting=2, kv_cache_usage=None, now=now)
    b.record_load(running=8, waiting=6, kv_cache_usage=None, now=now)
    assert router.pick("m").id == "c"
    c.in_flight = 20
    now = time.time()
    a.record_load(running=6, waiting=2, kv_cache_usage=None, now=now)  # (8+1)/1 = 9
    b.record_load(running=8, waiting=6, kv_cache_usage=None, now=now)  # (14+1)/2 = 7.5
    assert {router.pick("m").id for _ in range(4)} == {"b"}
    b.in_flight = 4  # four sent here since b's read: (18+1)/2 = 9.5 > 9
    assert router.pick("m").id == "a"


def test_the_prefix_bound_counts_the_read_load() -> None:
    router = Router(routing="prefix", spill=0.25, slack=0)
    a, b = replica("a"), replica("b")
    router.add(a)
    router.add(b)
    key = affinity.digest("conversation")
    first = affinity.rank(key, [a, b])[0]
    other = b if first is a else a
    assert router.pick("m", key=key) is first  # idle: the key's first choice
    now = time.time()
    # first's engine runs 10 requests sent by other gateways, other runs none: past its bound
    first.record_load(running=8, waiting=2, kv_cache_usage=None, now=now)
    other.record_load(running=0, waiting=0, kv_cache_usage=None, now=now)
    assert first.in_flight == 0 and router.pick("m", key=key) is other
    # the same without a read: this gateway sees no load and keeps the first choice
    first.load_read_at = other.load_read_at = None
    assert router.pick("m", key=key) is first
