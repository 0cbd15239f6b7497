"""What the routing modes cost the gateway's hot path: one gateway per mode, side by side.

    .venv/bin/python bench/routing_overhead.py [--duration 5] [--rounds 3] [--connections 16]

Two nginx mocks (the gateway benchmark's upstream, ``upstream_mock.py``) are the two ``http``
replicas of one model. Three ``inferd gateway`` processes serve that model, the same in all
but the model's ``routing``: ``weighted`` (the replicas taken in turn by weight: no state read,
the baseline), ``least_busy`` (the load each replica reports, else its requests in flight) and
``prefix`` (the prompt head's hash, the replicas ranked for it, the load bound). Every gateway
has every other feature of the hot path on: an API key with a requests/min limit and a model
allow-list, usage metering, fair queueing. ``wrk`` posts the same non-streamed chat to each in
turn for several interleaved rounds; the table gives requests/s (median of the rounds) and each
mode's ratio to ``weighted``. The target: ``prefix`` and ``least_busy`` within 5% of
``weighted`` (a ratio of at least 0.95).

``--vary``: every request's message differs (``Say hello <n>``), so ``prefix`` spreads the
requests over both replicas as it would many conversations, where one message for all sends
them to the replica that wins its key, as far as the load bound lets it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import harness
import upstream_mock as mock
from harness import Service, WrkResult, free_port, median, run_wrk
from inferd_target import ADMIN_KEY

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".bench" / "routing-overhead"
CHAT = b'{"model":"mock","messages":[{"role":"user","content":"Say hello"}],"max_tokens":16}'
VARIED = (b'{"model":"mock","messages":[{"role":"user","content":"Say hello {n}"}],'
          b'"max_tokens":16}')
MODES = ("weighted", "least_busy", "prefix")


@dataclass
class Gateway:
    mode: str
    service: Service
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    runs: list[WrkResult] = field(default_factory=list)


def start_mock(name: str, services: list[Service]) -> str:
    port = free_port()
    conf = mock.nginx_config(WORK / name, port)
    nginx = Service(name, [shutil.which("nginx") or "/usr/sbin/nginx", "-c", str(conf),
                           "-p", str(WORK / name)], port, WORK)
    nginx.start()
    services.append(nginx)
    url = f"http://127.0.0.1:{port}"
    harness.wait_ready(nginx, url + "/v1/chat/completions", CHAT, {})
    return url


def start_gateway(mode: str, upstreams: list[str], services: list[Service]) -> Gateway:
    data = WORK / f"data-{mode}"
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    config = WORK / f"inferd-{mode}.json"
    config.write_text(json.dumps({"remote_models": [{
        "name": "mock", "routing": mode,
        "replicas": [{"kind": "http", "url": u + "/v1", "upstream_model": "mock"}
                     for u in upstreams]}]}))
    port = free_port()
    env = {"INFERD_ADMIN_KEY": ADMIN_KEY, "INFERD_AUTH": "on", "INFERD_DATA_DIR": str(data),
           "INFERD_BUNDLED_MODELS": "false", "INFERD_LOG_LEVEL": "warning",
           "INFERD_DATABASE_URL": ""}
    service = Service(f"inferd-{mode}", [str(ROOT / ".venv" / "bin" / "inferd"), "gateway",
                                         "--config", str(config), "--port", str(port)],
                      port, WORK, env=env)
    service.start()
    services.append(service)
    gateway = Gateway(mode, service, f"http://127.0.0.1:{port}")
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    harness.wait_ready(service, gateway.url + "/v1/chat/completions", CHAT, admin)
    spec = {"name": "bench", "scope": "user", "rpm": 100_000_000, "models": ["mock"]}
    status, body = harness.post(gateway.url + "/admin/v1/keys", json.dumps(spec).encode(),
                                admin)
    if status not in (200, 201):
        raise RuntimeError(f"creating the key on {mode} failed: {status} {body[:300]!r}")
    gateway.headers = {"Authorization": f"Bearer {json.loads(body)['key']}"}
    status, body = harness.get(gateway.url + "/admin/v1/models/mock", admin)
    routing = json.loads(body).get("routing") if status == 200 else None
    if routing != mode:
        raise RuntimeError(f"the gateway for {mode} routes the model with {routing!r}")
    return gateway


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--vary", action="store_true",
                        help="a message of its own for every request")
    args = parser.parse_args()
    body = VARIED if args.vary else CHAT
    services: list[Service] = []
    try:
        upstreams = [start_mock("mock-a", services), start_mock("mock-b", services)]
        gateways = [start_gateway(mode, upstreams, services) for mode in MODES]
        for g in gateways:  # warm-up, not in the table
            run_wrk(g.url + "/v1/chat/completions", body, g.headers, args.connections, 2,
                    vary=args.vary)
        for r in range(args.rounds):
            order = gateways if r % 2 == 0 else list(reversed(gateways))
            for g in order:
                result = run_wrk(g.url + "/v1/chat/completions", body, g.headers,
                                 args.connections, args.duration, vary=args.vary)
                g.runs.append(result)
                print(f"  round {r + 1} {g.mode:10} {result.rps:9,.0f} req/s  p50 "
                      f"{result.p50_ms:6.2f} ms  p99 {result.p99_ms:7.2f} ms  errors "
                      f"{result.errors}  (load {harness.load_average()})", flush=True)
    finally:
        for s in reversed(services):
            s.stop()
    base = median([r.rps for r in gateways[0].runs])
    what = "a message of its own per request" if args.vary else "one message for all"
    print(f"\nNon-streamed POST /v1/chat/completions ({what}) to a model of 2 http replicas, wrk "
          f"{args.connections} connections, {args.duration:g} s a run, median of "
          f"{args.rounds} interleaved rounds (load {harness.load_average()}):\n")
    print("| routing | requests/s | p50 | p99 | errors | ratio to weighted |")
    print("|---|---|---|---|---|---|")
    for g in gateways:
        rps = median([r.rps for r in g.runs])
        pairs = [r.rps / b.rps for r, b in zip(g.runs, gateways[0].runs, strict=True)]
        print(f"| `{g.mode}` | {rps:,.0f} | {median([r.p50_ms for r in g.runs]):.2f} ms | "
              f"{median([r.p99_ms for r in g.runs]):.2f} ms | "
              f"{sum(r.errors for r in g.runs)} | {rps / base:.3f} (rounds: "
              f"{', '.join(f'{p:.2f}' for p in pairs)}) |")
    worst = min(median([r.rps for r in g.runs]) / base for g in gateways[1:])
    print(f"\nevery mode within 5% of weighted: {worst >= 0.95} (lowest ratio {worst:.3f})")
    if any(r.errors for g in gateways for r in g.runs):
        sys.exit("some requests failed")


if __name__ == "__main__":
    main()
