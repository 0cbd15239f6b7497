"""Test helpers: services on this machine, free ports, waiting on state with a deadline, and
``inferd`` as a subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from aiohttp import web

T = TypeVar("T")

ROOT = Path(__file__).resolve().parent.parent
SERVICES = {"postgresql": 5432, "mariadb": 3306, "redis": 6379, "rabbitmq": 5672}


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def require_service(name: str) -> None:
    """Skip (or, in CI, fail) when a service of this machine is not running."""
    port = SERVICES[name]
    if port_open(port):
        return
    message = f"{name} is not running on 127.0.0.1:{port}"
    if os.environ.get("INFERD_REQUIRE_SERVICES") == "1":
        pytest.fail(message + " (INFERD_REQUIRE_SERVICES=1)")
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(check: Callable[[], T], *, within: float = 60.0, interval: float = 0.1,
             what: str = "the condition") -> T:
    """Poll ``check`` until it returns a true value (returned), failing after ``within`` s.

    The deadline only bounds a wait for state that is expected to change; it is not a
    performance bound (the machine is shared and slow), so it is generous.
    """
    deadline = time.monotonic() + within
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} was not reached within {within} s (last: {value!r})")
        time.sleep(interval)


async def wait_for_async(check: Callable[[], Awaitable[T]], *, within: float = 60.0,
                         interval: float = 0.05, what: str = "the condition") -> T:
    """``wait_for`` for coroutines: polls without blocking the event loop."""
    deadline = time.monotonic() + within
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} was not reached within {within} s (last: {value!r})")
        await asyncio.sleep(interval)


@asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    """``app`` served on a free loopback port for the block; yields its base URL."""
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def _listens(pid: int, port: int) -> bool:
    """Whether process ``pid`` holds the listening TCP socket of ``port`` (Linux ``/proc``):
    a ``/ready`` answer on the port may come from another process's server."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":
                    inodes.add(f"socket:[{fields[9]}]")
    fds = Path(f"/proc/{pid}/fd")
    with contextlib.suppress(OSError):  # the process may be exiting
        return any(os.readlink(fd) in inodes for fd in fds.iterdir())
    return False


class InferdProcess:
    """``python -m inferd <args>`` in a subprocess, with its own data directory and port."""

    def __init__(self, data_dir: Path, *args: str, port: int | None = None,
                 env: dict[str, str] | None = None, command: str = "serve",
                 log_path: Path | None = None, python: str = sys.executable) -> None:
        self.python = python  # another venv's interpreter runs the inferd installed there
        self.chosen_port = port is not None
        self.port = port or free_port()
        self.data_dir = data_dir
        self.command = command
        self.extra = list(args)
        # A test that stops a process with work in flight says how long it may drain; others
        # stop as soon as the work in flight has had a few seconds.
        self.env = {**os.environ, "PYTHONPATH": str(ROOT / "src"),
                    "INFERD_SHUTDOWN_GRACE_SECONDS": "5", **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = log_path or data_dir / f"inferd-{self.port}.log"

    @property
    def args(self) -> list[str]:
        return [self.command, "--port", str(self.port), "--data-dir", str(self.data_dir),
                *self.extra]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> InferdProcess:
        """Start it and wait until it answers ``/ready`` itself. A free port is only free
        until someone binds it: another process (another test run on this machine) may take
        it first, and then this one starts again on a new port."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(5):
            offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            with self.log_path.open("ab") as log:
                self.proc = subprocess.Popen([self.python, "-m", "inferd", *self.args],
                                             env=self.env, stdout=log,
                                             stderr=subprocess.STDOUT, cwd=ROOT)
            if self._ready(timeout):
                return self
            taken = "address already in use" in self.log_path.read_text(
                errors="replace")[offset:].lower()
            if self.chosen_port or not taken:
                raise RuntimeError(f"inferd exited with {self.proc.returncode}:\n{self.log()}")
            self.port = free_port()
        raise RuntimeError(f"inferd found no free port:\n{self.log()}")

    def _ready(self, timeout: float) -> bool:
        """True once this process answers ``/ready`` on its port; False if it exited."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                if (httpx.get(self.url + "/ready", timeout=1.0).status_code == 200
                        and _listens(self.proc.pid, self.port)):
                    return True
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"inferd did not become ready:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def kill(self) -> None:
        """``kill -9``: no shutdown code runs."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> InferdProcess:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def spooled_usage(data_dir: Path, writer: str = "usage") -> int:
    """The usage records (``writer="requests"``: the request log's) in the spool files of a
    process's data directory (what the writer has accepted and a kill -9 leaves behind;
    written or not)."""
    from inferd.spool import read_frames

    count = 0
    for path in (data_dir / "spool" / writer).glob("*.spool"):
        fd = os.open(path, os.O_RDONLY)
        try:
            count += sum(len(frame.records) for frame in read_frames(fd))
        finally:
            os.close(fd)
    return count
