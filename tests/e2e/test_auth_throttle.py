"""Failed-authentication throttling per client address, through a real ``inferd serve``.

Two client addresses on loopback (127.0.0.2 fails on purpose, 127.0.0.1 is another client):
after ``INFERD_AUTH_FAILURE_LIMIT`` failures the failing address gets 429 in the OpenAI shape
(Anthropic's on ``/v1/messages``) with ``Retry-After``, even with a valid key; the other address
is not affected, and public routes stay open.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.helpers import InferdProcess

ADMIN_KEY = "sk-test-admin-throttle-0123456789abcdef"
LIMIT = 5
CHAT = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InferdProcess]:
    env = {"INFERD_MODELS": json.dumps([{"name": "echo", "kind": "echo"}]),
           "INFERD_ADMIN_KEY": ADMIN_KEY, "INFERD_AUTH_FAILURE_LIMIT": str(LIMIT),
           # long enough that no failure drains away while the test runs
           "INFERD_AUTH_FAILURE_WINDOW_SECONDS": "3600"}
    with InferdProcess(tmp_path_factory.mktemp("throttle"), "--no-bundled", env=env) as proc:
        yield proc


def client(server: InferdProcess, address: str, key: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=server.url, headers=headers, timeout=30,
                        transport=httpx.HTTPTransport(local_address=address))


def test_an_address_that_keeps_failing_is_throttled_and_others_are_not(
        server: InferdProcess) -> None:
    with client(server, "127.0.0.2") as failing, \
            client(server, "127.0.0.2", ADMIN_KEY) as same_address, \
            client(server, "127.0.0.1", ADMIN_KEY) as other:
        for _ in range(LIMIT):
            refused = failing.post("/v1/chat/completions", json=CHAT)
            assert refused.status_code == 401, refused.text
        throttled = failing.post("/v1/chat/completions", json=CHAT)
        assert throttled.status_code == 429, throttled.text
        error = throttled.json()["error"]
        assert error["type"] == "rate_limit_error"
        assert error["code"] == "too_many_failed_authentications"
        assert int(throttled.headers["retry-after"]) >= 1
        # the key is not looked at while the address is throttled: a valid one waits too
        assert same_address.get("/v1/models").status_code == 429
        anthropic = same_address.post("/v1/messages", json={"model": "echo", "max_tokens": 5,
                                                            "messages": CHAT["messages"]})
        assert anthropic.status_code == 429
        assert anthropic.json()["error"]["type"] == "rate_limit_error"
        assert int(anthropic.headers["retry-after"]) >= 1
        assert failing.get("/health").status_code == 200  # public routes need no key
        # another address: its valid key works, its failures are its own
        answer = other.post("/v1/chat/completions", json=CHAT)
        assert answer.status_code == 200, answer.text
        with client(server, "127.0.0.1", "sk-inferd-wrong") as wrong:
            assert wrong.get("/v1/models").status_code == 401
        metrics = other.get("/metrics").text
    counted = [line for line in metrics.splitlines() if line.startswith(
        'inferd_rate_limited_total{reason="too_many_failed_authentications"}')]
    assert counted and float(counted[0].split()[-1]) >= 3, counted
