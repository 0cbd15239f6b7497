"""What every benchmark script shares: free ports, server processes (``inferd serve`` among
them), ``wrk`` runs, streaming probes, statistics.

The scripts are run as ``.venv/bin/python bench/<script>.py``: Python puts ``bench/`` first on
the path, so they ``import harness`` as it is.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
WRK_SCRIPT = BENCH_DIR / "wrk_post.lua"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Service:
    """A server process started by the benchmark (stopped by its own pid, never by name)."""

    name: str
    cmd: list[str]
    port: int
    logdir: Path
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.logdir.mkdir(parents=True, exist_ok=True)
        log = (self.logdir / f"{self.name}.log").open("wb")
        self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT,
                                     env={**os.environ, **self.env}, cwd=self.cwd,
                                     start_new_session=True)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        # the process group we created for it (nginx workers, node children)
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def rss_mb(self) -> float:
        """Resident memory of the main process, in MB (VmRSS)."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def cpu_seconds(self) -> float:
        """CPU time (user and system, every thread) the main process has used so far."""
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log_tail(self, lines: int = 20) -> str:
        text = (self.logdir / f"{self.name}.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])


def start_inferd(data_dir: Path, args: list[str], env: dict[str, str] | None = None,
                 command: str = "serve", timeout: float = 120.0) -> tuple[
                     subprocess.Popen[bytes], str]:
    """``python -m inferd <command>`` on a free port with this checkout's ``src``, once ready
    (``GET /ready`` answers 200); returns the process and its URL. Stop it with ``stop``."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "inferd", command, "--port", str(port), "--data-dir",
         str(data_dir), "--log-level", "warning", *args],
        env={**os.environ, "PYTHONPATH": str(ROOT / "src"), **(env or {})},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"inferd exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/ready", timeout=1) as response:
                if response.status == 200:
                    return proc, url
        except OSError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("inferd did not start")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (a clean shutdown), SIGKILL if it does not end."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class InferdServer:
    """``with InferdServer(data_dir, *args) as server``: ``inferd serve`` for one block."""

    def __init__(self, data_dir: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.data_dir, self.args, self.env = data_dir, list(args), env
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def __enter__(self) -> InferdServer:
        self.proc, self.url = start_inferd(self.data_dir, self.args, self.env, timeout=300)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            stop(self.proc)


def post(url: str, body: bytes, headers: dict[str, str], timeout: float = 5.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def get(url: str, headers: dict[str, str], timeout: float = 5.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_ready(service: Service, url: str, body: bytes, headers: dict[str, str],
               timeout: float = 120.0) -> None:
    """Poll with a real request until it answers 200 (or the process dies)."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if not service.alive():
            raise RuntimeError(f"{service.name} exited:\n{service.log_tail()}")
        try:
            status, data = post(url, body, headers, timeout=10)
            if status == 200:
                return
            last = f"{status} {data[:300]!r}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.3)
    raise RuntimeError(f"{service.name} not ready after {timeout}s: {last}\n{service.log_tail()}")


@dataclass
class WrkResult:
    """One ``wrk`` run."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


def run_wrk(url: str, body: bytes, headers: dict[str, str], connections: int, seconds: float,
            threads: int = 1, vary: bool = False) -> WrkResult:
    """``vary``: ``{n}`` in ``body`` becomes each request's number (every body differs)."""
    env = {**os.environ, "BENCH_BODY": body.decode(),
           "BENCH_HEADERS": "\n".join(f"{k}: {v}" for k, v in headers.items()),
           "BENCH_VARY": "1" if vary else ""}
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s",
                          "--timeout", "10s", "-s", str(WRK_SCRIPT), url],
                         env=env, capture_output=True, text=True, check=True).stdout
    line = next(s for s in out.splitlines() if s.startswith('{"requests"'))
    data = json.loads(line)
    errors = sum(data[k] for k in ("connect", "read", "write", "status", "timeout"))
    return WrkResult(requests=data["requests"], seconds=data["duration_us"] / 1e6,
                     p50_ms=data["p50_us"] / 1000, p99_ms=data["p99_us"] / 1000, errors=errors)


# -- streaming probes (raw sockets: nothing between the measurement and the bytes) ------------

_STAMP = re.compile(rb"t=(\d+)")


def _request_bytes(port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}",
             "Content-Type: application/json", f"Content-Length: {len(body)}",
             *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def stream_once(port: int, path: str, body: bytes,
                      headers: dict[str, str]) -> tuple[float, list[float]]:
    """One streamed request on a fresh connection.

    Returns the time to the first SSE event (ms, from the request's last byte written) and,
    for every ``t=<ns>`` stamp the upstream put in a chunk, how long after its writing it
    arrived here (ms; both ends read CLOCK_MONOTONIC).
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(_request_bytes(port, path, body, headers))
        await writer.drain()
        sent = time.perf_counter()
        ttfb = None
        delays: list[float] = []
        seen = b""
        scanned = 0
        while True:
            data = await asyncio.wait_for(reader.read(65536), 10)
            now_ns = time.monotonic_ns()
            if not data:
                break
            seen += data
            if ttfb is None and b"data: " in seen:
                ttfb = (time.perf_counter() - sent) * 1000
            # stamps only from whole events: an event split across reads counts when complete
            end = seen.rfind(b"\n\n")
            if end > scanned:
                delays += [(now_ns - int(m)) / 1e6 for m in _STAMP.findall(seen, scanned, end)]
                scanned = end
            if b"[DONE]" in seen:
                break
        if ttfb is None or b"[DONE]" not in seen:
            raise RuntimeError(f"stream through port {port} broke: {seen[-300:]!r}")
        return ttfb, delays
    finally:
        writer.close()


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])
