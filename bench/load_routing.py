"""The cost of load-aware routing: the router's pick with and without read loads, and the
parse of one engine's ``/metrics``.

Side by side in one run: ``Router.pick`` of a model with ``--replicas`` echo replicas, by
``least_busy`` and by ``prefix`` (a routing key), first with no load read (the in-flight
counts), then with a fresh read on every replica; picks per second of each and the ratio
read/in-flight. Then the time to parse a vLLM-format exposition of ``--series`` model series
(gauges, counters and histograms, as a vLLM server publishes them) per poll of one replica.

    .venv/bin/python bench/load_routing.py [--replicas 4] [--picks 200000] [--series 4]
"""

from __future__ import annotations

import argparse
import time

from inferd.engines.echo import EchoEngine
from inferd.routing import affinity
from inferd.routing.load import parse
from inferd.routing.replica import Replica
from inferd.routing.router import Router
from inferd.settings import ModelSpec


def router(routing: str, replicas: int, read: bool) -> Router:
    out = Router(routing=routing)  # type: ignore[arg-type]
    now = time.time()
    for i in range(replicas):
        r = Replica(
            id=f"r{i}",
            model="m",
            engine=EchoEngine(ModelSpec(name="m", kind="echo")),
            load_ttl=3600.0,
        )
        r.in_flight = i % 3
        if read:
            r.record_load(running=float(i * 2), waiting=float(i % 2), kv_cache_usage=0.5, now=now)
        out.add(r)
    return out


def picks_per_second(routing: str, replicas: int, read: bool, picks: int) -> float:
    r = router(routing, replicas, read)
    keys = [affinity.digest(f"conversation {i}") for i in range(1024)]
    key = None
    started = time.perf_counter()
    for i in range(picks):
        if routing == "prefix":
            key = keys[i & 1023]
        r.pick("m", key=key)
    return picks / (time.perf_counter() - started)


def exposition(series: int) -> str:
    lines = []
    for name, kind in (
        ("vllm:num_requests_running", "gauge"),
        ("vllm:num_requests_waiting", "gauge"),
        ("vllm:kv_cache_usage_perc", "gauge"),
        ("vllm:prompt_tokens_total", "counter"),
        ("vllm:generation_tokens_total", "counter"),
    ):
        lines += [f"# HELP {name} {name}.", f"# TYPE {name} {kind}"]
        lines += [f'{name}{{engine="0",model_name="model-{s}"}} {s}.0' for s in range(series)]
    for name in (
        "vllm:time_to_first_token_seconds",
        "vllm:inter_token_latency_seconds",
        "vllm:e2e_request_latency_seconds",
        "vllm:request_queue_time_seconds",
        "vllm:request_prompt_tokens",
        "vllm:request_generation_tokens",
    ):
        lines += [f"# HELP {name} {name}.", f"# TYPE {name} histogram"]
        for s in range(series):
            labels = f'engine="0",model_name="model-{s}"'
            for le in (
                "0.001",
                "0.005",
                "0.01",
                "0.02",
                "0.04",
                "0.06",
                "0.08",
                "0.1",
                "0.25",
                "0.5",
                "0.75",
                "1.0",
                "2.5",
                "5.0",
                "7.5",
                "10.0",
                "20.0",
                "+Inf",
            ):
                lines.append(f'{name}_bucket{{{labels},le="{le}"}} 3.0')
            lines += [f"{name}_count{{{labels}}} 3.0", f"{name}_sum{{{labels}}} 0.5"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--picks", type=int, default=200_000)
    parser.add_argument("--series", type=int, default=4)
    args = parser.parse_args()
    print(f"Router.pick, {args.replicas} replicas, {args.picks} picks")
    print(f"{'routing':<12}{'in-flight/s':>14}{'read load/s':>14}{'ratio':>8}")
    for routing in ("least_busy", "prefix"):
        base = picks_per_second(routing, args.replicas, False, args.picks)
        read = picks_per_second(routing, args.replicas, True, args.picks)
        print(f"{routing:<12}{base:>14,.0f}{read:>14,.0f}{read / base:>8.2f}")
    text = exposition(args.series)
    rounds = 200
    started = time.perf_counter()
    for _ in range(rounds):
        load = parse(text, None, "model-1")
    seconds = (time.perf_counter() - started) / rounds
    print(
        f"parse of a vLLM /metrics ({len(text):,} bytes, {args.series} models): "
        f"{seconds * 1e3:.2f} ms per read -> {load}"
    )


if __name__ == "__main__":
    main()
