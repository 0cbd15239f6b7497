"""Clients of the shared ``inferd serve`` (the ``inferd_server`` fixture of tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from openai import OpenAI

from tests.helpers import InferdProcess


@pytest.fixture(scope="module")
def client(inferd_server: InferdProcess) -> Iterator[OpenAI]:
    """The official openai SDK, pointed at the shared server, without its own retries."""
    with OpenAI(base_url=inferd_server.url + "/v1", api_key="unused", max_retries=0,
                timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def http(inferd_server: InferdProcess) -> Iterator[httpx.Client]:
    """A plain HTTP client of the shared server."""
    with httpx.Client(base_url=inferd_server.url, timeout=180) as c:
        yield c
