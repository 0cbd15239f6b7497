"""The request log on the gateway's hot path: requests a second with the log off, on, and on
with a key that keeps its bodies, side by side.

    .venv/bin/python bench/request_log_gateway.py [--seconds 10] [--rounds 3] [--connections 16]
    .venv/bin/python bench/request_log_gateway.py --bare   # the bare aiohttp proxy beside them

Two ``inferd gateway`` processes (SQLite) in front of the nginx mock (a fixed chat answer, no
model time): one with ``INFERD_REQUEST_LOG=false``, one with the log on (the default), holding
two keys, one of them with ``log_bodies`` (``INFERD_REQUEST_LOG_REDACT=mask``, the default).
``wrk`` POSTs the same chat request (``--connections`` connections, ``--seconds`` each) to the
log-off gateway, the log-on gateway with the plain key, then with the bodies key; ``--rounds``
times, interleaved so that the machine's drift falls on every case alike. Prints each run, the
median requests a second of each case and the ratios to the log off, and each case's CPU time a
request (the serving process, every thread, from ``/proc``). Only one gateway is loaded at a
time (the other idles). ``--bare`` adds the bare aiohttp proxy of ``bench/gateway.py``
(``bench/bare_proxy.py``) as a case, and each case's ratio to it: what the log does to the
gateway benchmark's figure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
from pathlib import Path

import harness
import inferd_target
import upstream_mock as mock
from harness import Service, free_port

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".bench" / "request_log_gateway"
CHAT = (b'{"model":"mock","messages":[{"role":"user","content":"Say hello to jane@example.com'
        b', my card is 4111 1111 1111 1111"}],"max_tokens":16}')
ADMIN = {"Authorization": f"Bearer {inferd_target.ADMIN_KEY}"}
URL = "/v1/chat/completions"


def gateway(name: str, mock_url: str, env: dict[str, str]) -> inferd_target.Inferd:
    inferd = inferd_target.Inferd(ROOT, WORK / name, mock_url, mock_url)
    inferd.service.env.update(env)
    inferd.start()
    return inferd


def bodies_key(inferd: inferd_target.Inferd) -> tuple[dict[str, str], str]:
    spec = {"name": "bench-bodies", "rpm": 100_000_000, "models": ["mock"], "log_bodies": True}
    status, data = harness.post(inferd.url + "/admin/v1/keys", json.dumps(spec).encode(), ADMIN)
    if status != 201:
        raise RuntimeError(f"creating the bodies key failed: {status} {data[:300]!r}")
    made = json.loads(data)
    return {"Authorization": f"Bearer {made['key']}"}, str(made["id"])


def check_bodies(inferd: inferd_target.Inferd, kept_by: str) -> None:
    """The bodies key's newest request has its bodies, masked; the plain key's none."""
    import urllib.request

    def newest(key_id: str | None) -> dict[str, object]:
        req = urllib.request.Request(
            f"{inferd.url}/admin/v1/requests?limit=1&status=200&key_id={key_id}", headers=ADMIN)
        with urllib.request.urlopen(req, timeout=300) as resp:
            row: dict[str, object] = json.loads(resp.read())["data"][0]
        return row

    kept = newest(kept_by)
    if "[email]" not in str(kept["request_body"]) or not kept["response_body"]:
        raise RuntimeError(f"the bodies key's request has no masked bodies: {kept}")
    if newest(inferd.key_id)["request_body"] is not None:
        raise RuntimeError("the plain key's request has a body")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--bare", action="store_true",
                        help="the bare aiohttp proxy as a case too")
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}, load before: {harness.load_average()}", flush=True)
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    services: list[Service] = []
    try:
        port = free_port()
        conf = mock.nginx_config(WORK / "nginx", port)
        nginx = Service("nginx", [shutil.which("nginx") or "/usr/sbin/nginx", "-c", str(conf),
                                  "-p", str(WORK / "nginx")], port, WORK)
        nginx.start()
        services.append(nginx)
        mock_url = f"http://127.0.0.1:{port}"
        harness.wait_ready(nginx, mock_url + URL, CHAT, {})
        off = gateway("off", mock_url, {"INFERD_REQUEST_LOG": "false"})
        services.append(off.service)
        on = gateway("on", mock_url, {"INFERD_REQUEST_LOG": "true"})
        services.append(on.service)
        keeps, keeps_id = bodies_key(on)
        # each case: the URL, its headers and the process serving it
        cases: dict[str, tuple[str, dict[str, str], Service]] = {
            "log off": (off.url + URL, off.headers, off.service),
            "log on": (on.url + URL, on.headers, on.service),
            "log on + bodies": (on.url + URL, keeps, on.service)}
        if args.bare:
            bare_port = free_port()
            bare = Service("bare", [sys.executable, str(ROOT / "bench" / "bare_proxy.py"),
                                    str(bare_port), mock_url + "/v1"], bare_port, WORK)
            bare.start()
            services.append(bare)
            bare_url = f"http://127.0.0.1:{bare_port}{URL}"
            harness.wait_ready(bare, bare_url, CHAT, {})
            cases = {"bare aiohttp proxy": (bare_url, {}, bare), **cases}
        print(f"{on.describe()}; wrk {args.connections} connections, {args.seconds:g} s a run, "
              f"{args.rounds} rounds", flush=True)
        for url, headers, _ in cases.values():  # warm up each case (connections, caches)
            harness.run_wrk(url, CHAT, headers, args.connections, 2)
        rates: dict[str, list[float]] = {name: [] for name in cases}
        cpu: dict[str, list[float]] = {name: [] for name in cases}
        for round_ in range(args.rounds):
            for name, (url, headers, service) in cases.items():
                before = service.cpu_seconds()
                result = harness.run_wrk(url, CHAT, headers, args.connections, args.seconds)
                if result.errors:
                    raise RuntimeError(f"{name}: {result.errors} errors")
                rates[name].append(result.rps)
                cpu[name].append((service.cpu_seconds() - before) / result.requests * 1e6)
                print(f"  round {round_ + 1} {name:18s} {result.rps:8,.0f} req/s  "
                      f"p50 {result.p50_ms:6.2f} ms  p99 {result.p99_ms:6.2f} ms  "
                      f"CPU {cpu[name][-1]:4.0f} us/request (load {harness.load_average()})",
                      flush=True)
        check_bodies(on, keeps_id)
        base = statistics.median(rates["log off"])
        bare_rate = statistics.median(rates["bare aiohttp proxy"]) if args.bare else None
        summary = {name: round(statistics.median(r)) for name, r in rates.items()}
        for name, rate in summary.items():
            versus = f"   ratio to the bare proxy {rate / bare_rate:.3f}" if bare_rate else ""
            print(f"{name:18s} median {rate:8,} req/s   ratio to log off {rate / base:.3f}"
                  f"{versus}   CPU {statistics.median(cpu[name]):4.0f} us/request")
        print(json.dumps({"requests_per_second": summary,
                          "cpu_us_per_request": {name: round(statistics.median(c))
                                                 for name, c in cpu.items()},
                          "ratio_on": round(summary["log on"] / base, 3),
                          "ratio_bodies": round(summary["log on + bodies"] / base, 3)}))
    finally:
        for service in reversed(services):
            service.stop()


if __name__ == "__main__":
    main()
