"""No input, however malformed, gets a 500 or a non-OpenAI error: every route of the API is
sent broken bodies and out-of-range ids."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import InferdProcess

BODIES = [
    b"", b"{", b"null", b"[]", b"123", b'"x"', b"\xff\xfe",
    b'{"model": null}', b'{"model": 5, "messages": "x"}',
    b'{"model": "echo", "messages": [{}]}',
    b'{"model": "echo", "messages": [{"role": "user", "content": null}], "n": "x"}',
    b'{"endpoint": 5, "body": []}', b'{"job_id": [], "meta": 5, "content": {"a": 1}}',
    b'{"kind": "http", "url": "ftp://x", "weight": -1}', b'{"scope": "root", "rpm": 1e309}',
    json.dumps({"model": "echo", "max_tokens": 10**30, "seed": 10**30, "top_k": "x",
                "messages": [{"role": "user", "content": "x"}]}).encode(),
    json.dumps({"name": "a" * 5000, "max_new_tokens": 10**30}).encode(),
]
IDS = ["abc", "999999999999999999999999", "0"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InferdProcess]:
    env = {"INFERD_MODELS": json.dumps([{"name": "echo", "kind": "echo"}])}
    with InferdProcess(tmp_path_factory.mktemp("fuzz"), "--no-bundled", env=env) as proc:
        yield proc


def routes(server: InferdProcess) -> list[tuple[str, str]]:
    spec = httpx.get(server.url + "/openapi.json").json()
    found = [(method.upper(), path) for path, ops in spec["paths"].items() for method in ops]
    return [*found, ("POST", "/v1/chat/completions"), ("POST", "/chat/completions")]


def test_no_route_answers_malformed_input_with_a_server_error(server: InferdProcess,
                                                              tmp_path: Path) -> None:
    failures: list[str] = []
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for method, template in routes(server):
            paths = {re.sub(r"\{[^}]+\}", value, template) for value in IDS}
            bodies = BODIES if method in {"POST", "PUT", "PATCH"} else [b""]
            for path in sorted(paths):
                for body in bodies:
                    response = http.request(method, path, content=body,
                                            headers={"content-type": "application/json"})
                    where = f"{method} {path} {body[:50]!r} -> {response.status_code}"
                    if response.status_code >= 500:
                        failures.append(where)
                    elif response.status_code >= 400:
                        try:
                            error = response.json()["error"]
                            assert isinstance(error["message"], str) and "type" in error
                        except (ValueError, KeyError, TypeError, AssertionError):
                            failures.append(where + " (not the OpenAI error shape)")
    assert not failures, "\n".join(failures[:30])
