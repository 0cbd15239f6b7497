"""Clients of the shared ``inferd serve`` (the ``inferd_server`` fixture of tests/conftest.py)."""

from __future__ import annotations

import json
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


@pytest.fixture(scope="session")
def token_id_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InferdProcess]:
    """``inferd serve`` with the bundled embedding model only, set to read token-id input
    (``token_id_input``), which the shared server's model refuses."""
    from inferd.settings import MINILM_NAME, bundled_minilm_path

    models = [{"name": MINILM_NAME, "kind": "embeddings", "path": bundled_minilm_path(),
               "token_id_input": True}]
    with InferdProcess(tmp_path_factory.mktemp("token-ids"), "--no-bundled",
                       env={"INFERD_MODELS": json.dumps(models)}) as server:
        yield server
