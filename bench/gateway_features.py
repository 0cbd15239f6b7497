"""What the gateway's optional hot-path features cost: ``inferd gateway`` with each on and off,
beside the bare aiohttp proxy, in one run.

    .venv/bin/python bench/gateway_features.py [--rounds 5] [--duration 5]

The gateway benchmark's setup (``bench/gateway.py --bare-only``: an nginx mock, the bare proxy
of ``bench/bare_proxy.py``, ``inferd gateway`` with a user key with an rpm limit and an
allow-list, usage metering), one gateway process per variant: every feature on (what inferd
serves by default), and the same without the request log (``INFERD_REQUEST_LOG=false``). ``wrk``
(16 connections) posts the same chat to each in turn, rounds interleaved and the order
reversed every other round; the table gives requests/s (median), the ratio to the bare proxy
and the process's CPU time per request (every thread, from ``/proc``).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import harness
import inferd_target
import upstream_mock as mock
from harness import Service, free_port, median, run_wrk

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".bench" / "gateway-features"
CHAT = b'{"model":"mock","messages":[{"role":"user","content":"Say hello"}],"max_tokens":16}'
VARIANTS = {"inferd, every feature": {},
            "inferd, no request log": {"INFERD_REQUEST_LOG": "false"}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    services: list[Service] = []
    try:
        port = free_port()
        conf = mock.nginx_config(WORK / "nginx", port)
        nginx = Service("nginx", [shutil.which("nginx") or "/usr/sbin/nginx", "-c", str(conf),
                                  "-p", str(WORK / "nginx")], port, WORK)
        nginx.start()
        services.append(nginx)
        mock_url = f"http://127.0.0.1:{port}"
        harness.wait_ready(nginx, mock_url + "/v1/chat/completions", CHAT, {})
        bare_port = free_port()
        bare = Service("bare", [sys.executable, str(ROOT / "bench" / "bare_proxy.py"),
                                str(bare_port), mock_url + "/v1"], bare_port, WORK)
        bare.start()
        services.append(bare)
        bare_url = f"http://127.0.0.1:{bare_port}/v1/chat/completions"
        harness.wait_ready(bare, bare_url, CHAT, {})
        targets: list[tuple[str, str, dict[str, str], Service]] = [
            ("bare aiohttp proxy", bare_url, {}, bare)]
        for index, (name, env) in enumerate(VARIANTS.items()):
            inferd = inferd_target.Inferd(ROOT, WORK / f"inferd-{index}", mock_url, mock_url)
            inferd.service.env.update(env)
            services.append(inferd.service)
            inferd.start()
            targets.append((name, inferd.url + "/v1/chat/completions", inferd.headers,
                            inferd.service))
        for _, url, headers, _ in targets:  # warm-up, not in the table
            run_wrk(url, CHAT, headers, args.connections, 2)
        rps: dict[str, list[float]] = {name: [] for name, *_ in targets}
        cpu: dict[str, list[float]] = {name: [] for name, *_ in targets}
        for r in range(args.rounds):
            for name, url, headers, service in (targets if r % 2 == 0 else targets[::-1]):
                before = service.cpu_seconds()
                result = run_wrk(url, CHAT, headers, args.connections, args.duration)
                used = (service.cpu_seconds() - before) / max(1, result.requests) * 1e6
                rps[name].append(result.rps)
                cpu[name].append(used)
                print(f"  round {r + 1} {name:24} {result.rps:8,.0f} req/s  CPU {used:4.0f} "
                      f"us/request  errors {result.errors}  (load {harness.load_average()})",
                      flush=True)
    finally:
        for s in reversed(services):
            s.stop()
    base = median(rps["bare aiohttp proxy"])
    print(f"\nNon-streamed POST /v1/chat/completions, wrk {args.connections} connections, "
          f"{args.duration:g} s a run, median of {args.rounds} interleaved rounds:\n")
    print("| path | requests/s | ratio to the bare proxy | CPU a request |")
    print("|---|---|---|---|")
    for name in rps:
        print(f"| {name} | {median(rps[name]):,.0f} | {median(rps[name]) / base:.3f} | "
              f"{median(cpu[name]):.0f} us |")


if __name__ == "__main__":
    main()
