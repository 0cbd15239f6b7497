"""What tracing costs the gateway: chat requests/s with tracing off and on, side by side.

    .venv/bin/python bench/tracing.py                  # about 2 minutes
    .venv/bin/python bench/tracing.py --duration 5 --rounds 2

Starts Debian's nginx-light as the upstream (the fixed chat completion of
``upstream_mock.nginx_config``: as fast as an upstream can be), an OTLP/HTTP receiver in this
process that answers every export at once (it keeps the bodies and decodes them after the
runs), and three ``inferd serve`` processes routing model ``mock`` to nginx as an ``http``
replica, no keys: tracing off (no endpoint), on (every request traced, the SDK's default
sampler) and on with ``OTEL_TRACES_SAMPLER=traceidratio`` at 0.1. ``wrk`` (POST, 16
connections) runs on each in turn for several interleaved rounds; the table is the median of
the rounds, with each one's requests/s as a ratio of tracing off, and the spans the receiver got
per request (a traced request is 4 spans: server, inference, route, attempt; the SDK's batch
processor drops spans past its queue, ``OTEL_BSP_MAX_QUEUE_SIZE``, 2,048 by default).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import harness
import tools
import upstream_mock as mock
from harness import Service, WrkResult, free_port, median, run_wrk

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".bench" / "tracing"
CHAT = b'{"model":"mock","messages":[{"role":"user","content":"Say hello"}],"max_tokens":16}'


class Sink:
    """An OTLP/HTTP receiver that answers at once and keeps what it was sent."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # the exporter keeps its connection

            def do_POST(self) -> None:
                sink.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def spans(self, service: str) -> int:
        """The spans ``service`` exported (decoded now, after the runs)."""
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        count = 0
        for body in self.bodies:
            for spans in ExportTraceServiceRequest.FromString(body).resource_spans:
                name = {a.key: a.value.string_value for a in spans.resource.attributes}
                if name.get("service.name") == service:
                    count += sum(len(s.spans) for s in spans.scope_spans)
        return count


@dataclass
class Variant:
    name: str
    env: dict[str, str]
    service: Service | None = None
    url: str = ""
    runs: list[WrkResult] = field(default_factory=list)
    requests: int = 0


def start(variant: Variant, config: Path, services: list[Service]) -> None:
    port = free_port()
    data = WORK / f"data-{port}"
    shutil.rmtree(data, ignore_errors=True)
    service = Service(variant.name, [str(ROOT / ".venv" / "bin" / "inferd"), "serve",
                                     "--no-bundled", "--config", str(config), "--port", str(port),
                                     "--data-dir", str(data), "--log-level", "warning"],
                      port, WORK, env={"INFERD_AUTH": "off", **variant.env})
    service.start()
    services.append(service)
    variant.service, variant.url = service, f"http://127.0.0.1:{port}/v1/chat/completions"
    harness.wait_ready(service, variant.url, CHAT, {})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    tools.ensure(litellm=False, portkey=False)
    WORK.mkdir(parents=True, exist_ok=True)
    sink = Sink()
    services: list[Service] = []
    exporting = {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.url}
    variants = [
        Variant("off", {}),
        Variant("on", {**exporting, "OTEL_SERVICE_NAME": "bench-on"}),
        Variant("on, 10% sampled", {**exporting, "OTEL_SERVICE_NAME": "bench-sampled",
                                    "OTEL_TRACES_SAMPLER": "traceidratio",
                                    "OTEL_TRACES_SAMPLER_ARG": "0.1"}),
    ]
    try:
        mock_port = free_port()
        conf = mock.nginx_config(WORK / "nginx", mock_port)
        nginx = Service("nginx", [shutil.which("nginx") or "/usr/sbin/nginx", "-c", str(conf),
                                  "-p", str(WORK / "nginx")], mock_port, WORK)
        nginx.start()
        services.append(nginx)
        mock_url = f"http://127.0.0.1:{mock_port}"
        harness.wait_ready(nginx, mock_url + "/v1/chat/completions", CHAT, {})
        config = WORK / "inferd.yaml"
        config.write_text(
            "remote_models:\n  - name: mock\n    replicas:\n"
            f"      - {{kind: http, url: '{mock_url}/v1', upstream_model: mock}}\n")
        for variant in variants:
            start(variant, config, services)
        for variant in variants:  # warm-up, not in the table
            variant.requests += run_wrk(variant.url, CHAT, {}, args.connections, 2).requests
        for r in range(args.rounds):
            for variant in variants:
                result = run_wrk(variant.url, CHAT, {}, args.connections, args.duration)
                variant.runs.append(result)
                variant.requests += result.requests
                print(f"  round {r + 1} tracing {variant.name:16} {result.rps:8,.0f} req/s  "
                      f"p50 {result.p50_ms:6.2f} ms  p99 {result.p99_ms:7.2f} ms  "
                      f"errors {result.errors}  (load {harness.load_average()})", flush=True)
        for variant in variants[1:]:  # a clean stop sends what the exporter still holds
            assert variant.service is not None
            variant.service.stop()
    finally:
        for service in reversed(services):
            service.stop()
    base = median([r.rps for r in variants[0].runs])
    print(f"\nNon-streamed POST /v1/chat/completions through `inferd serve` to nginx, wrk "
          f"{args.connections} connections, {args.duration:g} s per run, median of "
          f"{args.rounds} interleaved rounds:\n")
    print("| tracing | requests/s | vs off | p50 | p99 | errors | spans exported per request |")
    print("|---|---|---|---|---|---|---|")
    for variant in variants:
        rps = median([r.rps for r in variant.runs])
        name = variant.env.get("OTEL_SERVICE_NAME")
        spans = f"{sink.spans(name) / variant.requests:.2f}" if name else "0 (nothing sent)"
        print(f"| {variant.name} | {rps:,.0f} | {rps / base:.2f} | "
              f"{median([r.p50_ms for r in variant.runs]):.2f} ms | "
              f"{median([r.p99_ms for r in variant.runs]):.2f} ms | "
              f"{sum(r.errors for r in variant.runs)} | {spans} |")
    print(f"\nload average at the end: {harness.load_average()}", file=sys.stderr)


if __name__ == "__main__":
    main()
