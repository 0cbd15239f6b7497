"""The fast tier (``make check``): ``tests/unit/<package>/test_<module>.py`` tests inferd's
modules inside this process. A test here starts no process (no ``inferd serve``, no
``python -c``), connects to none of the machine's services (PostgreSQL, MariaDB, Redis,
RabbitMQ) and carries none of their markers; such a test belongs in ``tests/integration``
(or e2e, cluster, deploy). Both rules are enforced: a marked test fails collection, and
starting a process or connecting to a service's port fails the test that does it."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from tests.helpers import SERVICES

UNIT = Path(__file__).resolve().parent
# The markers of tests that need something this tier has not: a service, the bundled model,
# minutes of load, the package index, the machine to itself.
SLOW_TIER_MARKERS = ("postgres", "mariadb", "rabbitmq", "redis", "slow", "broker_restart",
                     "soak", "pypi", "serial")
SERVICE_PORTS = {port: name for name, port in SERVICES.items()}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    wrong = [f"{item.nodeid} (@pytest.mark.{marker})" for item in items
             if item.path.is_relative_to(UNIT)
             for marker in SLOW_TIER_MARKERS if item.get_closest_marker(marker)]
    if wrong:
        raise pytest.UsageError(
            "tests/unit is the fast tier: these tests need a service or a long run and belong "
            "in tests/integration (or e2e, cluster):\n  " + "\n  ".join(wrong))


def _refuse(what: str) -> NoReturn:
    raise AssertionError(f"tests/unit is the fast tier: a test here does not {what}; "
                         "move it to tests/integration")


@pytest.fixture(autouse=True)
def _fast_tier_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Refuse, for the test's duration, every way of starting a process and any connection
    to a service's port (on any host)."""

    def no_process(*args: Any, **kwargs: Any) -> NoReturn:
        _refuse("start a process")

    monkeypatch.setattr(subprocess.Popen, "_execute_child", no_process)
    for name in ("fork", "forkpty", "posix_spawn", "posix_spawnp", "system", "execv",
                 "execve", "spawnv", "spawnve"):
        if hasattr(os, name):
            monkeypatch.setattr(os, name, no_process)

    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def check(sock: socket.socket, address: Any) -> None:
        if (sock.family in (socket.AF_INET, socket.AF_INET6) and isinstance(address, tuple)
                and len(address) >= 2 and address[1] in SERVICE_PORTS):
            _refuse(f"connect to {SERVICE_PORTS[address[1]]} (port {address[1]})")

    def connect(sock: socket.socket, address: Any) -> None:
        check(sock, address)
        real_connect(sock, address)

    def connect_ex(sock: socket.socket, address: Any) -> int:
        check(sock, address)
        return real_connect_ex(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    yield
