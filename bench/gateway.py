"""The gateway benchmark: inferd next to LiteLLM, Portkey and a bare aiohttp proxy, one run.

    .venv/bin/python bench/gateway.py            # about 4 minutes; --long adds the 1M run
    .venv/bin/python bench/gateway.py --proxy-only   # inferd vs straight to the mock only
    .venv/bin/python bench/gateway.py --bare-only --duration 5   # inferd vs the bare proxy only

It installs what is missing (nginx-light and wrk from Debian, LiteLLM's proxy in its own venv
under .bench/, Portkey's gateway from npm under .bench/), starts every server on loopback
against the same nginx mock, runs ``wrk`` (POST, 16 connections, 10 s) on each path in turn for
several interleaved rounds, and prints requests/s, p50 and p99 per path (median of the rounds)
with ratios; then inferd at 256 connections, streaming time-to-first-byte and chunk delay
(inferd vs direct), inferd's memory (idle, after 100k and optionally 1M requests) and whether
every request left a usage record in the database. ``--proxy-only`` measures just the proxy
overhead: the mock straight, then through inferd, with the throughput ratio and the added p50.
``--bare-only`` runs just the table of the mock straight, the bare aiohttp proxy and inferd
(about a minute with ``--duration 5``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import sys
import time
from pathlib import Path

import harness
import inferd_target
import tools
import upstream_mock as mock
from harness import Service, WrkResult, free_port, median, pct, run_wrk

ROOT = Path(__file__).resolve().parent.parent
FIGURES: dict[str, float] = {}  # what the verdicts at the end are judged on
WORK = ROOT / ".bench" / "run"
CHAT = b'{"model":"mock","messages":[{"role":"user","content":"Say hello"}],"max_tokens":16}'
LITELLM_KEY = "sk-LsQ8xY2mT4vN7pR1wK9zB3cF6hJ0dG5a"  # its proxy refuses to start without one


class Path_:
    """One way to the mock: a URL, the headers it needs, and the server behind it."""

    def __init__(self, name: str, url: str, headers: dict[str, str],
                 service: Service | None) -> None:
        self.name, self.url, self.headers, self.service = name, url, headers, service
        self.runs: list[WrkResult] = []


def start_everything(args: argparse.Namespace, services: list[Service]) -> tuple[
        list[Path_], inferd_target.Inferd]:
    """Start every server, appending each to ``services`` at once (stopped even on failure)."""
    mock_port, paced_port = free_port(), free_port()
    conf = mock.nginx_config(WORK / "nginx", mock_port)
    nginx_bin = shutil.which("nginx") or "/usr/sbin/nginx"
    nginx = Service("nginx", [nginx_bin, "-c", str(conf), "-p", str(WORK / "nginx")],
                    mock_port, WORK)
    paced = Service("paced", [sys.executable, str(ROOT / "bench" / "upstream_mock.py"), "paced",
                              str(paced_port)], paced_port, WORK)
    for s in (nginx, paced):
        s.start()
        services.append(s)
    mock_url = f"http://127.0.0.1:{mock_port}"
    harness.wait_ready(nginx, mock_url + "/v1/chat/completions", CHAT, {})
    paths = [Path_("straight to the mock", mock_url + "/v1/chat/completions", {}, nginx)]
    if not args.proxy_only:
        bare_port = free_port()
        bare = Service("bare", [sys.executable, str(ROOT / "bench" / "bare_proxy.py"),
                                str(bare_port), f"http://127.0.0.1:{mock_port}/v1"], bare_port,
                       WORK)
        bare.start()
        services.append(bare)
        url = f"http://127.0.0.1:{bare_port}/v1/chat/completions"
        harness.wait_ready(bare, url, CHAT, {})
        paths.append(Path_("bare aiohttp proxy", url, {}, bare))
    inferd = inferd_target.Inferd(ROOT, WORK, mock_url, f"http://127.0.0.1:{paced_port}",
                                  store=args.store)
    services.append(inferd.service)
    inferd.start()
    paths.append(Path_("inferd (key, limits, metering)", inferd.url + "/v1/chat/completions",
                       inferd.headers, inferd.service))
    if not args.skip_portkey:
        port = free_port()
        portkey = Service("portkey", ["node", str(tools.PORTKEY_BIN), f"--port={port}",
                                      "--headless"], port, WORK,
                          env={"NODE_ENV": "production"})
        headers = {"x-portkey-provider": "openai", "Authorization": "Bearer sk-mock",
                   "x-portkey-custom-host": mock_url + "/v1"}
        portkey.start()
        services.append(portkey)
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        harness.wait_ready(portkey, url, CHAT, headers)
        paths.append(Path_("Portkey gateway", url, headers, portkey))
    if not args.skip_litellm:
        port = free_port()
        cfg = WORK / "litellm.yaml"
        cfg.write_text("model_list:\n  - model_name: mock\n    litellm_params:\n"
                       f"      model: openai/mock\n      api_base: {mock_url}/v1\n"
                       "      api_key: sk-mock\n")
        litellm = Service("litellm", [str(tools.LITELLM_BIN), "--config", str(cfg), "--host",
                                      "127.0.0.1", "--port", str(port), "--num_workers", "1"],
                          port, WORK, env={"LITELLM_MASTER_KEY": LITELLM_KEY,
                                           "LITELLM_LOCAL_MODEL_COST_MAP": "True"}, cwd=WORK)
        headers = {"Authorization": f"Bearer {LITELLM_KEY}"}
        litellm.start()
        services.append(litellm)
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        harness.wait_ready(litellm, url, CHAT, headers, timeout=180)
        paths.append(Path_("LiteLLM proxy (1 worker, no DB)", url, headers, litellm))
    return paths, inferd


def comparison(paths: list[Path_], inferd: inferd_target.Inferd,
               args: argparse.Namespace) -> None:
    for p in paths:  # warm-up (JIT, pools, caches), not in the table
        result = run_wrk(p.url, CHAT, p.headers, args.connections, 2)
        if p.service is inferd.service:
            inferd.note_requests(result.requests, args.connections)
    for r in range(args.rounds):
        for p in paths:
            result = run_wrk(p.url, CHAT, p.headers, args.connections, args.duration)
            p.runs.append(result)
            if p.service is inferd.service:
                inferd.note_requests(result.requests, args.connections)
            print(f"  round {r + 1} {p.name:34} {result.rps:10,.0f} req/s  "
                  f"p50 {result.p50_ms:6.2f} ms  p99 {result.p99_ms:7.2f} ms  "
                  f"errors {result.errors}  (load {harness.load_average()})", flush=True)


def print_table(paths: list[Path_], args: argparse.Namespace) -> None:
    print(f"\nNon-streamed POST /v1/chat/completions, wrk {args.connections} connections, "
          f"{args.duration:g} s per run, median of {args.rounds} interleaved rounds:\n")
    print("| path | requests/s | p50 | p99 | errors |")
    print("|---|---|---|---|---|")
    for p in paths:
        rps = median([r.rps for r in p.runs])
        print(f"| {p.name} | {rps:,.0f} | {median([r.p50_ms for r in p.runs]):.2f} ms | "
              f"{median([r.p99_ms for r in p.runs]):.2f} ms | {sum(r.errors for r in p.runs)} |")
    ours = next(p for p in paths if p.name.startswith("inferd"))
    ours_rps = median([r.rps for r in ours.runs])
    FIGURES.update(rps=ours_rps, p99=median([r.p99_ms for r in ours.runs]))
    for p in paths:
        FIGURES[p.name.split()[0].lower()] = median([r.rps for r in p.runs])
    print()
    for p in paths:
        if p is not ours:
            print(f"inferd / {p.name}: {ours_rps / median([r.rps for r in p.runs]):.2f}x "
                  "requests/s")


def proxy_overhead(paths: list[Path_]) -> None:
    """What going through inferd costs next to the mock straight: throughput and p50."""
    direct, ours = paths[0], next(p for p in paths if p.name.startswith("inferd"))
    ratio = median([r.rps for r in ours.runs]) / median([r.rps for r in direct.runs])
    added = median([r.p50_ms for r in ours.runs]) - median([r.p50_ms for r in direct.runs])
    print(f"inferd/direct throughput ratio: {ratio:.3f} (direct is {1 / ratio:.1f}x faster); "
          f"added p50 latency {added:.2f} ms")


def streaming(inferd: inferd_target.Inferd, samples: int) -> None:
    direct_ttfb: list[float] = []
    ours_ttfb: list[float] = []
    body = (b'{"model":"MODEL","stream":true,'
            b'"messages":[{"role":"user","content":"Say hello"}]}')

    async def probe() -> tuple[list[float], list[float]]:
        for _ in range(samples):  # interleaved, one at a time, fresh connection each
            t, _d = await harness.stream_once(inferd.mock_port, "/sse/v1/chat/completions",
                                              body.replace(b"MODEL", b"mock"), {})
            direct_ttfb.append(t)
            t, _d = await harness.stream_once(inferd.port, "/v1/chat/completions",
                                              body.replace(b"MODEL", b"mock-sse"),
                                              inferd.headers)
            ours_ttfb.append(t)
            inferd.note_requests(1)
        direct_delay: list[float] = []
        ours_delay: list[float] = []
        for _ in range(max(5, samples // 10)):
            _t, d = await harness.stream_once(inferd.paced_port, "/v1/chat/completions",
                                              body.replace(b"MODEL", b"mock"), {})
            direct_delay += d
            _t, d = await harness.stream_once(inferd.port, "/v1/chat/completions",
                                              body.replace(b"MODEL", b"mock-paced"),
                                              inferd.headers)
            ours_delay += d
            inferd.note_requests(1)
        return direct_delay, ours_delay

    direct_delay, ours_delay = asyncio.run(probe())
    print(f"\nStreaming (SSE), {samples} requests each, one at a time, fresh connection:")
    print("| path | TTFB p50 | TTFB p99 | chunk delay p50 | chunk delay p99 | max |")
    print("|---|---|---|---|---|---|")
    for name, ttfb, delay in (("direct", direct_ttfb, direct_delay),
                              ("through inferd", ours_ttfb, ours_delay)):
        print(f"| {name} | {pct(ttfb, 50):.2f} ms | {pct(ttfb, 99):.2f} ms | "
              f"{pct(delay, 50):.2f} ms | {pct(delay, 99):.2f} ms | {max(delay):.2f} ms |")
    FIGURES.update(ttfb_extra=pct(ours_ttfb, 50) - pct(direct_ttfb, 50),
                   chunk_extra=pct(ours_delay, 50) - pct(direct_delay, 50),
                   chunk_max=max(ours_delay))
    print(f"TTFB through inferd - direct, p50: {pct(ours_ttfb, 50) - pct(direct_ttfb, 50):.2f} ms"
          f"; chunk delay (paced upstream, {mock.CHUNKS} chunks {mock.INTERVAL * 1000:.0f} ms "
          f"apart) p50 {pct(ours_delay, 50):.2f} ms, max {max(ours_delay):.2f} ms")


def many_connections(inferd: inferd_target.Inferd, args: argparse.Namespace) -> None:
    result = run_wrk(inferd.url + "/v1/chat/completions", CHAT, inferd.headers, 256,
                     args.duration)
    inferd.note_requests(result.requests, 256)
    FIGURES["errors_256"] = result.errors
    print(f"\ninferd at 256 connections: {result.rps:,.0f} req/s, p50 {result.p50_ms:.2f} ms, "
          f"p99 {result.p99_ms:.2f} ms, errors {result.errors}")


def memory(inferd: inferd_target.Inferd, idle: float, args: argparse.Namespace) -> None:
    marks = [100_000, 1_000_000] if args.long else [100_000]
    rss: dict[int, float] = {}
    for mark in marks:
        while inferd.requests_sent < mark:
            left = mark - inferd.requests_sent
            seconds = max(2.0, min(30.0, left / 3000))
            result = run_wrk(inferd.url + "/v1/chat/completions", CHAT, inferd.headers,
                             args.connections, seconds)
            inferd.note_requests(result.requests, args.connections)
        rss[mark] = inferd.service.rss_mb()
        print(f"  inferd RSS after {inferd.requests_sent:,} requests: {rss[mark]:.1f} MB",
              flush=True)
    print(f"\ninferd memory: idle {idle:.1f} MB RSS; " + "; ".join(
        f"after {m:,} requests {v:.1f} MB" for m, v in rss.items()))
    FIGURES["idle_rss"] = idle
    if len(rss) == 2:
        growth = (rss[1_000_000] - rss[100_000]) / rss[100_000] * 100
        FIGURES["growth"] = growth
        print(f"growth from 100k to 1M requests: {growth:+.1f}%")


def verdicts() -> None:
    """The issue's targets, each met or not on this run."""
    f = FIGURES
    checks = [(">= 3,500 requests/s", f["rps"] >= 3500),
              ("p99 < 10 ms at 16 connections", f["p99"] < 10),
              ("no error at 256 connections", f["errors_256"] == 0),
              ("streaming TTFB within 1 ms of direct at p50", f["ttfb_extra"] <= 1),
              ("chunks not buffered (added delay p50 <= 1 ms)", f["chunk_extra"] <= 1),
              ("idle RSS < 150 MB", f["idle_rss"] < 150),
              ("no usage record dropped", f["usage_ok"] == 1)]
    if "bare" in f:
        checks.append((">= half the bare proxy", f["rps"] >= f["bare"] / 2))
    if "portkey" in f:
        checks.append((">= 3x Portkey", f["rps"] >= 3 * f["portkey"]))
    if "litellm" in f:
        checks.append((">= 35x LiteLLM", f["rps"] >= 35 * f["litellm"]))
    if "growth" in f:
        checks.append(("RSS within 10% from 100k to 1M requests", abs(f["growth"]) <= 10))
    print("\ntargets:")
    for name, ok in checks:
        print(f"  [{'met' if ok else 'NOT met'}] {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--stream-samples", type=int, default=300)
    parser.add_argument("--long", action="store_true",
                        help="also drive inferd to 1,000,000 requests for the leak check")
    parser.add_argument("--store", choices=["sqlite", "postgresql"], default="sqlite",
                        help="inferd's database: a fresh SQLite file under .bench/, or a fresh "
                             "database on the local PostgreSQL server")
    parser.add_argument("--skip-litellm", action="store_true")
    parser.add_argument("--skip-portkey", action="store_true")
    parser.add_argument("--proxy-only", action="store_true",
                        help="only the proxy overhead: the mock straight, then through inferd")
    parser.add_argument("--bare-only", action="store_true",
                        help="only the table: the mock straight, the bare aiohttp proxy and "
                             "inferd")
    args = parser.parse_args()
    if args.proxy_only or args.bare_only:
        args.skip_litellm = args.skip_portkey = True
    tools.ensure(litellm=not args.skip_litellm, portkey=not args.skip_portkey)
    print(f"cores: {harness.os.cpu_count()}, load before: {harness.load_average()}", flush=True)
    services: list[Service] = []
    try:
        paths, inferd = start_everything(args, services)
        idle = inferd.service.rss_mb()
        print(f"inferd idle RSS: {idle:.1f} MB ({inferd.describe()})", flush=True)
        comparison(paths, inferd, args)
        print_table(paths, args)
        if args.proxy_only:
            proxy_overhead(paths)
            return
        if args.bare_only:
            return
        many_connections(inferd, args)
        streaming(inferd, args.stream_samples)
        memory(inferd, idle, args)
        time.sleep(inferd_target.FLUSH_WAIT)
        FIGURES["usage_ok"] = float(inferd.check_usage())
        print(f"load after: {harness.load_average()}")
        verdicts()
    finally:
        for s in reversed(services):
            with contextlib.suppress(Exception):
                s.stop()


if __name__ == "__main__":
    main()
