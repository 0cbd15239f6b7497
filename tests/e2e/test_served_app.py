"""``create_app`` builds the application exactly as ``inferd serve`` runs it: a test client of
``create_app()`` and a real server answer every chat request alike (status, media type, body,
ids and times aside), and so does the framework's route for the operation (documented in
OpenAPI), which answers through the same function as the fast path."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.types import Receive, Scope, Send

from inferd.app import create_app
from inferd.settings import load_settings
from tests.helpers import InferdProcess, wait_for

MODELS = [{"name": "echo", "kind": "echo"},
          {"name": "slow", "kind": "echo", "echo_delay": 600.0}]  # ten minutes a word
CHAT = {"model": "echo", "messages": [{"role": "user", "content": "hello there"}],
        "max_tokens": 8}
# (path, body): valid and invalid chat requests
CASES: list[tuple[str, bytes]] = [
    ("/v1/chat/completions", json.dumps(CHAT).encode()),
    ("/chat/completions", json.dumps(CHAT).encode()),  # the proxy toolkit's unprefixed path
    ("/v1/chat/completions", json.dumps({"model": "echo"}).encode()),  # no messages
    ("/v1/chat/completions", b'{"model": "echo", "messages": '),  # not JSON
    ("/v1/chat/completions", json.dumps({**CHAT, "model": "no-such-model"}).encode()),
    ("/v1/chat/completions", json.dumps({**CHAT, "temperature": "hot"}).encode()),
]
VARYING = {"id", "created", "system_fingerprint"}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InferdProcess]:
    with InferdProcess(tmp_path_factory.mktemp("served"), "--no-bundled",
                       env={"INFERD_MODELS": json.dumps(MODELS)}) as server:
        yield server


def through_the_framework(app: FastAPI) -> Any:
    """``app`` entered past its fast paths: the framework's routing answers."""

    async def framework(scope: Scope, receive: Receive, send: Send) -> None:
        await FastAPI.__call__(app, scope, receive, send)

    return framework


async def post_through_the_framework(app: FastAPI, path: str, body: bytes) -> httpx.Response:
    transport = httpx.ASGITransport(through_the_framework(app))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        return await client.post(path, content=body, headers={"Content-Type": "application/json"})


def answer(response: httpx.Response) -> tuple[int, str, Any]:
    content = response.json()
    if isinstance(content, dict) and "error" not in content:
        content = {k: v for k, v in content.items() if k not in VARYING}
    assert response.headers.get("x-request-id")
    return response.status_code, response.headers["content-type"], content


def test_a_test_client_of_create_app_answers_as_the_served_app(
        served: InferdProcess, tmp_path: Path) -> None:
    app = create_app(load_settings(data_dir=tmp_path, bundled_models=False, models=MODELS))
    statuses = set()
    with TestClient(app) as client, httpx.Client(base_url=served.url, timeout=60) as real:
        assert client.portal is not None  # the loop the app's services run on
        for path, body in CASES:
            headers = {"Content-Type": "application/json"}
            expected = answer(real.post(path, content=body, headers=headers))
            assert answer(client.post(path, content=body, headers=headers)) == expected, path
            route = client.portal.call(post_through_the_framework, app, path, body)
            assert answer(route) == expected, path
            statuses.add(expected[0])
    assert statuses == {200, 400, 404}  # valid and invalid bodies were compared


def metric(server: InferdProcess, name: str, **labels: str) -> float:
    """One sample of the server's Prometheus metrics (0 when not exported yet)."""
    wanted = {f'{k}="{v}"' for k, v in labels.items()}
    for line in httpx.get(server.url + "/metrics").text.splitlines():
        head, _, value = line.rpartition(" ")
        if head.startswith(name + "{") and set(head[len(name) + 1:-1].split(",")) == wanted:
            return float(value)
    return 0.0


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_leaves_ends_its_request_as_client_closed(served: InferdProcess,
                                                                stream: bool) -> None:
    """The server notices a lost connection while the model works (the generation is
    cancelled): the request is counted with status 499 and nothing stays in flight."""
    before = metric(served, "inferd_requests_total", endpoint="chat", model="slow",
                    status="499")
    body = json.dumps({"model": "slow", "stream": stream, "max_tokens": 4,
                       "messages": [{"role": "user", "content": "one two three four"}]})
    with socket.create_connection(("127.0.0.1", served.port)) as conn:
        conn.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: test\r\n"
                     f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                     f"{body}".encode())
        wait_for(lambda: metric(served, "inferd_requests_in_flight", model="slow") == 1,
                 within=60, what="the request in flight")
    # the connection is closed: the request must end long before the model would answer

    def closed() -> bool:
        return (metric(served, "inferd_requests_total", endpoint="chat", model="slow",
                       status="499") == before + 1
                and metric(served, "inferd_requests_in_flight", model="slow") == 0)

    wait_for(closed, within=60, what="the request ending as client-closed")
