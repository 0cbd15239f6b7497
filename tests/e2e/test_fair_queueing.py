"""Fair queueing through a real ``inferd serve``: a model whose one replica runs one request at
a time (``options.capacity: 1``) in front of an upstream the test drives (the ``gate`` of
``tests/fault_upstream.py``: each request is held until the test lets it answer).

A quiet key's request goes before a noisy key's backlog; a full queue refuses at once and a
request that waits past ``queue_timeout`` gets 503 with ``Retry-After``, both in the OpenAI
error shape; a stream sends nothing while it waits; a client that leaves leaves the queue.
With a reserve (``options.reserve: 1``), a key with nothing running reaches the replica at
once while another key's backlog waits.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import yaml

from tests.fault_upstream import FaultUpstream
from tests.helpers import InferdProcess, wait_for

ADMIN_KEY = "sk-test-admin-fairq-0123456789abcdef"
MODEL = "one-slot"
RESERVED = "one-slot-reserve"  # capacity 1 and reserve 1, on the same upstream
QUEUE_MAX = 4
QUEUE_TIMEOUT = 8.0  # long enough for the other tests' turns on a busy machine


@pytest.fixture(scope="module")
def upstream() -> Iterator[FaultUpstream]:
    with FaultUpstream() as up:
        yield up


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory,
           upstream: FaultUpstream) -> Iterator[InferdProcess]:
    tmp = tmp_path_factory.mktemp("fairq")
    config = tmp / "gateway.yaml"
    config.write_text(yaml.safe_dump({
        "bundled_models": False, "log_format": "text",
        "queue_max": QUEUE_MAX, "queue_timeout": QUEUE_TIMEOUT,
        "remote_models": [{"name": MODEL, "replicas": [
            {"kind": "http", "url": upstream.url("gate"), "upstream_model": "fake",
             "options": {"capacity": 1, "metrics": "none"}}]},
            {"name": RESERVED, "replicas": [
                {"kind": "http", "url": upstream.url("gate"), "upstream_model": "fake",
                 "options": {"capacity": 1, "reserve": 1, "metrics": "none"}}]}]}))
    env = {"INFERD_ADMIN_KEY": ADMIN_KEY, "INFERD_KEY_REFRESH_SECONDS": "0.3"}
    with InferdProcess(tmp / "gw", "--config", str(config), "--no-bundled", env=env) as proc:
        yield proc


def new_key(server: InferdProcess, name: str) -> str:
    created = httpx.post(server.url + "/admin/v1/keys", json={"name": name},
                         headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30)
    assert created.status_code == 201, created.text
    key: str = created.json()["key"]
    # a new key reaches the key ring within its refresh period
    wait_for(lambda: httpx.get(server.url + "/v1/models", timeout=30,
                               headers={"Authorization": f"Bearer {key}"}).status_code == 200,
             what=f"key {name} accepted")
    return key


@pytest.fixture(scope="module")
def keys(server: InferdProcess) -> dict[str, str]:
    return {name: new_key(server, name) for name in ("noisy", "quiet")}


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(8) as executor:
        yield executor


def chat(server: InferdProcess, key: str, text: str, model: str = MODEL,
         **extra: Any) -> httpx.Response:
    return httpx.post(server.url + "/v1/chat/completions", timeout=120,
                      headers={"Authorization": f"Bearer {key}"},
                      json={"model": model, "messages": [{"role": "user", "content": text}],
                            **extra})


def metric(server: InferdProcess, series: str) -> float:
    """The value of one series of ``/metrics`` (0 when absent)."""
    text = httpx.get(server.url + "/metrics", timeout=30).text
    found = re.search("^" + re.escape(series) + r" (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def depth(server: InferdProcess, model: str = MODEL) -> float:
    """Requests waiting for the model (interactive), from ``/metrics``."""
    return metric(server, f'inferd_gateway_queue_depth{{model="{model}",priority="interactive"}}')


def waiting(server: InferdProcess, count: int, model: str = MODEL) -> None:
    wait_for(lambda: depth(server, model) == count, what=f"{count} requests waiting")


def held(upstream: FaultUpstream, count: int) -> None:
    wait_for(lambda: upstream.held == count, what=f"{count} requests held upstream")


def release_all(upstream: FaultUpstream, answers: list[Future[httpx.Response]]) -> None:
    """Let every request answer, one at a time (the replica runs one)."""
    while not all(a.done() for a in answers):
        wait_for(lambda: upstream.held == 1 or all(a.done() for a in answers),
                 what="the next request upstream")
        if upstream.held:
            upstream.release()


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


def test_a_quiet_key_is_served_before_a_noisy_keys_backlog(
        server: InferdProcess, upstream: FaultUpstream, keys: dict[str, str],
        pool: ThreadPoolExecutor) -> None:
    start = len(upstream.arrivals)
    noisy = [pool.submit(chat, server, keys["noisy"], f"noisy {i}") for i in range(4)]
    held(upstream, 1)  # the first runs, the other three wait at the gateway
    waiting(server, 3)
    quiet = pool.submit(chat, server, keys["quiet"], "quiet 0")
    waiting(server, 4)
    # the admin API (and the UI's models page) shows what waits for the model
    models = httpx.get(server.url + "/admin/v1/models", timeout=30,
                       headers={"Authorization": f"Bearer {ADMIN_KEY}"}).json()["data"]
    assert [m["queued"] for m in models if m["name"] == MODEL] == [4]
    # the queue holds QUEUE_MAX: one more is refused at once
    full = chat(server, keys["noisy"], "noisy 4")
    assert full.status_code == 503
    assert error_of(full)["code"] == "queue_full"
    assert error_of(full)["type"] == "service_unavailable"
    assert int(full.headers["retry-after"]) >= 1
    release_all(upstream, [*noisy, quiet])
    assert [a.result().status_code for a in [*noisy, quiet]] == [200] * 5
    assert quiet.result().json()["choices"][0]["message"]["content"] == "quiet 0"
    # the noisy requests race each other to the gateway; the quiet one is second whatever
    # their order: right after the one that was running
    order = upstream.arrivals[start:]
    assert order[1] == "quiet 0"
    assert sorted(order[:1] + order[2:]) == [f"noisy {i}" for i in range(4)]
    assert depth(server) == 0


def test_a_request_that_waits_past_its_timeout_gets_503_with_retry_after(
        server: InferdProcess, upstream: FaultUpstream, keys: dict[str, str],
        pool: ThreadPoolExecutor) -> None:
    busy = pool.submit(chat, server, keys["noisy"], "busy")
    held(upstream, 1)
    late = chat(server, keys["quiet"], "late")  # waits QUEUE_TIMEOUT seconds, then 503
    assert late.status_code == 503
    error = error_of(late)
    assert error["code"] == "queue_timeout" and error["type"] == "service_unavailable"
    assert MODEL in error["message"]
    assert int(late.headers["retry-after"]) >= 1
    assert depth(server) == 0
    assert "late" not in upstream.arrivals
    release_all(upstream, [busy])
    assert busy.result().status_code == 200
    metrics = httpx.get(server.url + "/metrics", timeout=30).text
    assert ('inferd_gateway_queue_refused_total{model="one-slot",priority="interactive",'
            'reason="queue_timeout"} 1.0') in metrics


def raw_request(server: InferdProcess, key: str, body: dict[str, Any]) -> socket.socket:
    data = json.dumps(body).encode()
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=60)
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                 b"Authorization: Bearer " + key.encode() + b"\r\n"
                 b"Content-Type: application/json\r\nConnection: close\r\n"
                 b"Content-Length: " + str(len(data)).encode() + b"\r\n\r\n" + data)
    return sock


def read_all(sock: socket.socket) -> bytes:
    out = b""
    while chunk := sock.recv(65536):
        out += chunk
    return out


def test_a_stream_sends_nothing_until_admitted_and_a_client_that_leaves_leaves_the_queue(
        server: InferdProcess, upstream: FaultUpstream, keys: dict[str, str],
        pool: ThreadPoolExecutor) -> None:
    busy = pool.submit(chat, server, keys["noisy"], "busy")
    held(upstream, 1)
    stream = raw_request(server, keys["quiet"], {
        "model": MODEL, "stream": True, "messages": [{"role": "user", "content": "streamed"}]})
    waiting(server, 1)
    stream.setblocking(False)
    with pytest.raises(BlockingIOError):  # not a byte while it waits: no status, no header
        stream.recv(1)
    stream.setblocking(True)
    upstream.release()  # "busy" answers; the stream is admitted and held upstream in turn
    held(upstream, 1)
    assert upstream.arrivals[-1] == "streamed"
    upstream.release()
    answer = read_all(stream)
    stream.close()
    assert answer.startswith(b"HTTP/1.1 200")
    assert b"data: [DONE]" in answer
    assert busy.result().status_code == 200

    # a client that leaves while it waits is out of the queue, and never reaches the replica
    busy = pool.submit(chat, server, keys["noisy"], "busy again")
    held(upstream, 1)
    leaving = raw_request(server, keys["quiet"], {
        "model": MODEL, "messages": [{"role": "user", "content": "gone"}]})
    waiting(server, 1)
    leaving.close()
    waiting(server, 0)
    release_all(upstream, [busy])
    after = pool.submit(chat, server, keys["quiet"], "after")
    release_all(upstream, [after])
    assert after.result().status_code == 200
    assert upstream.arrivals[-2:] == ["busy again", "after"]
    assert "gone" not in upstream.arrivals


def test_with_a_reserve_a_key_with_nothing_running_reaches_the_replica_at_once(
        server: InferdProcess, upstream: FaultUpstream, pool: ThreadPoolExecutor) -> None:
    noisy_key, quiet_key = new_key(server, "reserve-noisy"), new_key(server, "reserve-quiet")
    start = len(upstream.arrivals)
    noisy = [pool.submit(chat, server, noisy_key, f"noisy {i}", RESERVED) for i in range(3)]
    held(upstream, 1)  # the capacity: one runs, the other two wait at the gateway
    waiting(server, 2, RESERVED)
    quiet = pool.submit(chat, server, quiet_key, "quiet 0", RESERVED)
    held(upstream, 2)  # the reserve: the quiet key had nothing running
    assert upstream.arrivals[-1] == "quiet 0"
    assert depth(server, RESERVED) == 2  # the noisy key's backlog still waits
    reserve = 'inferd_gateway_queue_reserve_total{model="one-slot-reserve"}'
    assert metric(server, reserve) == 1.0
    # its next request while the first runs does not go into the reserve: it waits its turn
    again = pool.submit(chat, server, quiet_key, "quiet 1", RESERVED)
    waiting(server, 3, RESERVED)
    answers = [*noisy, quiet, again]
    while not all(a.done() for a in answers):
        wait_for(lambda: upstream.held > 0 or all(a.done() for a in answers),
                 what="a request upstream")
        if upstream.held:
            upstream.release()
    assert [a.result().status_code for a in answers] == [200] * 5
    assert quiet.result().json()["choices"][0]["message"]["content"] == "quiet 0"
    order = upstream.arrivals[start:]
    assert order[1] == "quiet 0" and sorted(order) == sorted(
        [f"noisy {i}" for i in range(3)] + ["quiet 0", "quiet 1"])
    assert depth(server, RESERVED) == 0
