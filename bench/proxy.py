"""Proxy overhead: inferd (an ``http`` replica) in front of an upstream that answers instantly.

One run sets up everything on loopback and measures, interleaved, round after round:

* ``direct``: ``wrk`` POSTing a chat completion straight to the mock upstream (Debian's
  nginx-light returning a fixed ``chat.completion`` JSON);
* ``inferd``: the same load through ``inferd serve`` (no local models; one remote model whose
  replica is the mock), with an admin key sent as a Bearer token (auth, limits and usage
  metering are on where this build has them).

It prints requests/s, p50 and p99 latency per path (median over the rounds) and the ratio.
Needs ``nginx`` and ``wrk`` (``apt-get install -y nginx-light wrk``).

    .venv/bin/python bench/proxy.py [--duration 10] [--connections 16] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMPLETION = {
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1700000000,
    "model": "mock", "choices": [{"index": 0, "message": {"role": "assistant",
                                                          "content": "Hello from the mock."},
                                  "logprobs": None, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14}}
BODY = {"model": "bench", "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": 16}

NGINX_CONF = """worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/body;
  proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fastcgi;
  uwsgi_temp_path {tmp}/uwsgi;
  scgi_temp_path {tmp}/scgi;
  keepalive_requests 1000000;
  server {{
    listen 127.0.0.1:{port};
    location / {{
      default_type application/json;
      return 200 '{body}';
    }}
  }}
}}
"""

WRK_LUA = """wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY")
wrk.headers["Content-Type"] = "application/json"
local auth = os.getenv("BENCH_AUTH") or ""
if auth ~= "" then wrk.headers["Authorization"] = auth end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,' ..
    '"errors":%d,"status_errors":%d}\\n', summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status))
end
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float = 60.0, headers: dict[str, str] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            request = urllib.request.Request(url, headers=headers or {})
            with urllib.request.urlopen(request, timeout=1) as response:
                if response.status < 500:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def start_nginx(tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    port = free_port()
    conf = tmp / "nginx.conf"
    conf.write_text(NGINX_CONF.format(tmp=tmp, port=port, body=json.dumps(COMPLETION)))
    proc = subprocess.Popen([nginx, "-c", str(conf), "-p", str(tmp)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/health")
    return proc, url


def start_inferd(tmp: Path, upstream: str, admin_key: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    config = tmp / "inferd.json"  # JSON is YAML
    config.write_text(json.dumps({
        "bundled_models": False, "log_level": "warning", "log_requests": False,
        "remote_models": [{"name": "bench", "replicas": [
            {"kind": "http", "url": upstream + "/v1", "upstream_model": "mock"}]}]}))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "INFERD_ADMIN_KEY": admin_key}
    log = (tmp / "inferd.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "inferd", "serve", "--config", str(config),
                             "--no-bundled", "--port", str(port),
                             "--data-dir", str(tmp / "data")],
                            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/health")
    return proc, url


def run_wrk(url: str, duration: float, connections: int, lua: Path,
            auth: str = "") -> dict[str, float]:
    env = {**os.environ, "BENCH_BODY": json.dumps(BODY), "BENCH_AUTH": auth}
    seconds = max(1, round(duration))
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency",
                          "-s", str(lua), url + "/v1/chat/completions"],
                         env=env, capture_output=True, text=True, check=True,
                         timeout=duration + 30)
    line = next(li for li in out.stdout.splitlines() if li.startswith('{"requests"'))
    figures = json.loads(line)
    return {"rps": figures["requests"] / (figures["duration_us"] / 1e6),
            "p50_ms": figures["p50_us"] / 1000, "p99_ms": figures["p99_us"] / 1000,
            "errors": figures["errors"] + figures["status_errors"]}


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(r[key] for r in runs) for key in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    for tool in ("wrk", "nginx"):
        if not (shutil.which(tool) or Path(f"/usr/sbin/{tool}").exists()):
            sys.exit(f"{tool} is missing: apt-get install -y nginx-light wrk")
    admin_key = "sk-admin-" + secrets.token_hex(24)
    with tempfile.TemporaryDirectory(prefix="inferd-bench-") as name:
        tmp = Path(name)
        lua = tmp / "post.lua"
        lua.write_text(WRK_LUA)
        nginx, mock = start_nginx(tmp)
        inferd, gateway = start_inferd(tmp, mock, admin_key)
        auth = f"Bearer {admin_key}"
        try:
            run_wrk(gateway, 2, args.connections, lua, auth)  # warm-up
            runs: dict[str, list[dict[str, float]]] = {"direct": [], "inferd": []}
            for _ in range(args.rounds):
                runs["direct"].append(run_wrk(mock, args.duration, args.connections, lua))
                runs["inferd"].append(run_wrk(gateway, args.duration, args.connections, lua,
                                              auth))
        finally:
            for proc in (inferd, nginx):
                proc.terminate()
                proc.wait(15)
    report(runs, args)


def report(runs: dict[str, list[dict[str, float]]], args: argparse.Namespace) -> None:
    print(f"proxy overhead: {os.cpu_count()} cores, wrk 1 thread, {args.connections} "
          f"connections, {args.duration:g} s x {args.rounds} rounds (median), loopback")
    print(f"{'path':<8} {'requests/s':>11} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    medians = {path: median_of(r) for path, r in runs.items()}
    for path, m in medians.items():
        print(f"{path:<8} {m['rps']:>11,.0f} {m['p50_ms']:>8.2f} {m['p99_ms']:>8.2f} "
              f"{m['errors']:>7.0f}")
    ratio = medians["inferd"]["rps"] / medians["direct"]["rps"]
    overhead = medians["inferd"]["p50_ms"] - medians["direct"]["p50_ms"]
    print(f"inferd/direct throughput ratio: {ratio:.3f} "
          f"(direct is {1 / ratio:.1f}x faster); added p50 latency {overhead:.2f} ms")


if __name__ == "__main__":
    main()
