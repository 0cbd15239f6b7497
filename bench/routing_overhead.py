"""What the routing modes cost the gateway's hot path, side by side in one gateway.

    .venv/bin/python bench/routing_overhead.py [--duration 5] [--rounds 5] [--connections 16]
    .venv/bin/python bench/routing_overhead.py --processes   # one gateway process per mode

Two nginx mocks (the gateway benchmark's upstream, ``upstream_mock.py``) are the two ``http``
replicas of each model. One ``inferd gateway`` serves four models on them, the same in all but
their ``routing``: ``weighted`` (the replicas taken in turn by weight: no state read, the
baseline), ``least_busy`` (the load each replica reports, else its requests in flight),
``prefix`` (the prompt head's hash, the replicas ranked for it, the load bound) and a second
``weighted`` model, the control: its ratio to the first is what the benchmark cannot tell apart
from noise. The gateway has every other feature of the hot path on: an API key with a
requests/min limit and a model allow-list, usage metering, the request log, fair queueing.
``wrk`` posts the same non-streamed chat to each model in turn for several interleaved rounds
(the order reversed every other round); the table gives requests/s (median of the rounds) and
each mode's ratio to ``weighted`` (the ratio of the medians, and the median of the rounds'
ratios). The target: ``prefix`` and ``least_busy`` within 5% of ``weighted`` (a ratio of at
least 0.95).

Why one process: a gateway per mode (``--processes``, how this benchmark first ran) compares
processes as much as routings. Each lands on its own core, next to ``wrk`` or an nginx, with
its own memory layout; on 2 cores two gateways of the *same* routing differ by up to 15% a
round and by 5-10% in the median of five rounds, more than what is measured. In one process
the event loop, the key, the limits and the writers are shared, and only the choice of the
replica differs between the models.

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
# (model, routing): the modes, then the control (a second model routed like the baseline)
MODELS = (*((f"mock-{m}", m) for m in MODES), ("mock-control", "weighted"))


@dataclass
class Gateway:
    """One way in: a model (``--processes``: a gateway of its own) and the runs on it."""

    mode: str
    service: Service
    url: str
    model: str = "mock"
    headers: dict[str, str] = field(default_factory=dict)
    runs: list[WrkResult] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)  # the gateway's CPU per request, a run

    def body(self, vary: bool) -> bytes:
        return (VARIED if vary else CHAT).replace(b'"model":"mock"',
                                                  b'"model":"%s"' % self.model.encode())


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


def start_gateway(name: str, models: list[tuple[str, str]], upstreams: list[str],
                  services: list[Service]) -> tuple[Service, str, dict[str, str]]:
    """An ``inferd gateway`` serving ``models`` (name, routing) on the ``upstreams``; its
    service, URL and the headers of a user key allowed the models."""
    data = WORK / f"data-{name}"
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    config = WORK / f"inferd-{name}.json"
    config.write_text(json.dumps({"remote_models": [{
        "name": model, "routing": routing,
        "replicas": [{"kind": "http", "url": u + "/v1", "upstream_model": "mock"}
                     for u in upstreams]} for model, routing in models]}))
    port = free_port()
    env = {"INFERD_ADMIN_KEY": ADMIN_KEY, "INFERD_AUTH": "on", "INFERD_DATA_DIR": str(data),
           "INFERD_BUNDLED_MODELS": "false", "INFERD_LOG_LEVEL": "warning",
           "INFERD_DATABASE_URL": ""}
    service = Service(f"inferd-{name}", [str(ROOT / ".venv" / "bin" / "inferd"), "gateway",
                                         "--config", str(config), "--port", str(port)],
                      port, WORK, env=env)
    service.start()
    services.append(service)
    url = f"http://127.0.0.1:{port}"
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    first = CHAT.replace(b'"model":"mock"', b'"model":"%s"' % models[0][0].encode())
    harness.wait_ready(service, url + "/v1/chat/completions", first, admin)
    spec = {"name": "bench", "scope": "user", "rpm": 100_000_000,
            "models": [model for model, _ in models]}
    status, body = harness.post(url + "/admin/v1/keys", json.dumps(spec).encode(), admin)
    if status not in (200, 201):
        raise RuntimeError(f"creating the key on {name} failed: {status} {body[:300]!r}")
    headers = {"Authorization": f"Bearer {json.loads(body)['key']}"}
    for model, mode in models:
        status, body = harness.get(f"{url}/admin/v1/models/{model}", admin)
        routing = json.loads(body).get("routing") if status == 200 else None
        if routing != mode:
            raise RuntimeError(f"the gateway routes {model} with {routing!r}, not {mode}")
    return service, url, headers


def one_gateway(upstreams: list[str], services: list[Service]) -> list[Gateway]:
    """The four models in one gateway."""
    service, url, headers = start_gateway("all", list(MODELS), upstreams, services)
    return [Gateway("control" if model == "mock-control" else mode, service, url, model,
                    headers) for model, mode in MODELS]


def gateway_per_mode(upstreams: list[str], services: list[Service]) -> list[Gateway]:
    """A gateway process per mode (and one more ``weighted`` for the control)."""
    out = []
    for model, mode in MODELS:
        name = "control" if model == "mock-control" else mode
        service, url, headers = start_gateway(name, [("mock", mode)], upstreams, services)
        out.append(Gateway(name, service, url, "mock", headers))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--vary", action="store_true",
                        help="a message of its own for every request")
    parser.add_argument("--processes", action="store_true",
                        help="a gateway process per mode instead of one for all")
    args = parser.parse_args()
    services: list[Service] = []
    try:
        upstreams = [start_mock("mock-a", services), start_mock("mock-b", services)]
        gateways = (gateway_per_mode if args.processes else one_gateway)(upstreams, services)
        for g in gateways:  # warm-up, not in the table
            run_wrk(g.url + "/v1/chat/completions", g.body(args.vary), g.headers,
                    args.connections, 2, vary=args.vary)
        for r in range(args.rounds):
            order = gateways if r % 2 == 0 else list(reversed(gateways))
            for g in order:
                cpu = g.service.cpu_seconds()
                result = run_wrk(g.url + "/v1/chat/completions", g.body(args.vary), g.headers,
                                 args.connections, args.duration, vary=args.vary)
                g.runs.append(result)
                g.cpu_us.append((g.service.cpu_seconds() - cpu) / max(1, result.requests) * 1e6)
                print(f"  round {r + 1} {g.mode:10} {result.rps:9,.0f} req/s  p50 "
                      f"{result.p50_ms:6.2f} ms  p99 {result.p99_ms:7.2f} ms  gateway CPU "
                      f"{g.cpu_us[-1]:5.0f} us/request  errors {result.errors}  "
                      f"(load {harness.load_average()})", flush=True)
    finally:
        for s in reversed(services):
            s.stop()
    base = median([r.rps for r in gateways[0].runs])
    what = "a message of its own per request" if args.vary else "one message for all"
    where = "a gateway process per mode" if args.processes else "one gateway, a model per mode"
    print(f"\nNon-streamed POST /v1/chat/completions ({what}), {where}, 2 http replicas, wrk "
          f"{args.connections} connections, {args.duration:g} s a run, median of "
          f"{args.rounds} interleaved rounds (load {harness.load_average()}):\n")
    print("| routing | requests/s | p50 | p99 | gateway CPU a request | errors | ratio to "
          "weighted | median of the rounds' ratios (rounds) |")
    print("|---|---|---|---|---|---|---|---|")
    worst = 1.0
    for g in gateways:
        rps = median([r.rps for r in g.runs])
        pairs = [r.rps / b.rps for r, b in zip(g.runs, gateways[0].runs, strict=True)]
        print(f"| `{g.mode}` | {rps:,.0f} | {median([r.p50_ms for r in g.runs]):.2f} ms | "
              f"{median([r.p99_ms for r in g.runs]):.2f} ms | {median(g.cpu_us):.0f} us | "
              f"{sum(r.errors for r in g.runs)} | {rps / base:.3f} | {median(pairs):.3f} "
              f"({', '.join(f'{p:.2f}' for p in pairs)}) |")
        if g.mode in MODES[1:]:
            worst = min(worst, rps / base)
    print(f"\nleast_busy and prefix within 5% of weighted: {worst >= 0.95} (lowest ratio "
          f"{worst:.3f}; the control, a second weighted model, shows the noise)")
    if any(r.errors for g in gateways for r in g.runs):
        sys.exit("some requests failed")


if __name__ == "__main__":
    main()
