"""Hostile clients at the transport: oversized and never-ending request heads, slowloris,
a 50 MB chunked body, pathological JSON, and a flood of made-up model names. Each gets a clear
4xx in the OpenAI error shape (never a 500), normal requests are served meanwhile, and the
server's memory stays bounded (its RSS is printed before and after)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import InferdProcess

ADMIN_KEY = "sk-test-admin-transport-0123456789"
HEADER_TIMEOUT = 2.0  # seconds (the default is 10)
BODY_TIMEOUT = 4.0  # seconds (the default is 30)
BODY_MIN_RATE = 200  # bytes a second (the default is 500)
MAX_BODY = 8 * 1024 * 1024  # the default body limit
MAX_HEAD = 64 * 1024  # the default head limit
# Memory growth allowed over a whole test: generous (the machine is shared), and far below
# what the attacks cost without the limits (64 MiB heads x 8, a 50 MB body buffered).
RSS_BOUND = 200 * 1024 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InferdProcess]:
    env = {"INFERD_MODELS": json.dumps([{"name": "echo", "kind": "echo"}]),
           "INFERD_ADMIN_KEY": ADMIN_KEY,
           "INFERD_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT),
           "INFERD_BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT),
           "INFERD_BODY_MIN_RATE": str(BODY_MIN_RATE)}
    with InferdProcess(tmp_path_factory.mktemp("transport"), "--no-bundled", env=env) as proc:
        yield proc


@pytest.fixture(scope="module")
def user_key(server: InferdProcess) -> str:
    with httpx.Client(base_url=server.url, timeout=30,
                      headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as admin:
        created = admin.post("/admin/v1/keys", json={"name": "hostile-user"})
        assert created.status_code in {200, 201}, created.text
        key: str = created.json()["key"]
        return key


def rss(server: InferdProcess) -> int:
    """The server process's resident memory in bytes (from /proc)."""
    assert server.proc is not None
    for line in Path(f"/proc/{server.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def assert_openai_error(response: httpx.Response, status: int | None = None) -> dict[str, Any]:
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    if status is not None:
        assert response.status_code == status, (response.status_code, response.text[:300])
    error: dict[str, Any] = response.json()["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str)
    return error


async def exchange(server: InferdProcess, head: bytes,
                   body_chunks: Iterator[bytes] | None = None) -> tuple[bytes, int]:
    """Send ``head`` then the chunks on one connection while reading the answer; stops
    sending once the server answers or closes. Returns what was read and the bytes sent."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    sent = 0
    data = b""
    first = asyncio.create_task(reader.read(65536))
    try:
        for chunk in [head, *(body_chunks or ())]:
            if first.done():
                break
            writer.write(chunk)
            try:
                await writer.drain()
            except ConnectionError:
                break
            sent += len(chunk)
        try:
            data = await asyncio.wait_for(first, 60)
            while data and not complete(data):  # the rest of the answer
                more = await asyncio.wait_for(reader.read(65536), 60)
                if not more:
                    break
                data += more
        except ConnectionError:
            pass  # a reset after the answer: what was read is kept
    finally:
        writer.close()
    return data, sent


def complete(raw: bytes) -> bool:
    """Whether ``raw`` holds a whole response with a Content-Length."""
    if b"\r\n\r\n" not in raw:
        return False
    _status, headers, body = parse(raw)
    return "content-length" in headers and len(body) >= int(headers["content-length"])


def parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, headers, body


# -- request heads ----------------------------------------------------------------------------
async def test_oversized_request_heads_get_431_and_memory_stays_bounded(
        server: InferdProcess, user_key: str) -> None:
    before = rss(server)

    def filler() -> Iterator[bytes]:  # a header that never ends: 64 MiB at most
        yield b"X-Filler: "
        for _ in range(1024):
            yield b"a" * 65536

    head = (f"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {user_key}\r\n"
            ).encode()
    results = await asyncio.gather(*(exchange(server, head, filler()) for _ in range(8)))
    after = rss(server)
    print(f"8 connections with endless headers ({sum(s for _, s in results) >> 20} MiB sent): "
          f"server RSS {before >> 20} -> {after >> 20} MiB")
    for raw, _sent in results:
        status, headers, body = parse(raw)
        assert status == 431, raw[:200]
        assert headers["connection"] == "close"
        assert json.loads(body)["error"]["code"] == "headers_too_large"
    assert after - before < RSS_BOUND
    # the server still answers
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        response = await http.get("/v1/models", headers={"Authorization": f"Bearer {user_key}"})
        assert response.status_code == 200


def test_a_one_megabyte_header_gets_431(server: InferdProcess, user_key: str) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        try:
            response = http.get("/v1/models", headers={
                "Authorization": f"Bearer {user_key}", "X-Big": "b" * (1024 * 1024)})
        except httpx.TransportError:  # the server closed while the head was being sent
            return
        assert_openai_error(response, 431)
        # a head just under the limit is served
        ok = http.get("/v1/models", headers={"Authorization": f"Bearer {user_key}",
                                             "X-Big": "b" * (MAX_HEAD - 1024)})
        assert ok.status_code == 200, ok.text


async def test_slowloris_connections_are_closed_while_normal_requests_are_served(
        server: InferdProcess, user_key: str) -> None:
    """200 connections (and one more each half second while a normal request waits) send a
    header byte every half second and never finish their head: each is answered 408 and closed
    after the header timeout; a normal request is served meanwhile."""
    before = rss(server)
    closed: dict[int, bytes] = {}
    clients: list[asyncio.Task[None]] = []
    served = asyncio.Event()

    async def slow_client(i: int, going: asyncio.Event) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        read = asyncio.create_task(reader.read(65536))
        try:
            while not read.done():
                try:
                    writer.write(b"z")
                    await writer.drain()
                except ConnectionError:
                    break
                await asyncio.wait([read], timeout=0.5)
                going.set()
            try:
                closed[i] = await asyncio.wait_for(read, 30)
            except ConnectionError:
                closed[i] = b""
        finally:
            writer.close()

    async def attack() -> None:
        # After the first 200, one more each half second until the normal request has its
        # answer: however slow the machine, a fresh one is still open when the answer comes.
        while not served.is_set():
            going = asyncio.Event()
            clients.append(asyncio.create_task(slow_client(len(clients), going)))
            waiter = asyncio.ensure_future(going.wait())
            await asyncio.wait([clients[-1], waiter], return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()

    clients.extend(asyncio.create_task(slow_client(i, asyncio.Event())) for i in range(200))
    attacking = asyncio.create_task(attack())
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            response = await http.get("/v1/models",
                                      headers={"Authorization": f"Bearer {user_key}"})
            assert response.status_code == 200
            assert len(closed) < len(clients)  # the attack was still under way
            served.set()
        await attacking
        deadline = asyncio.get_running_loop().time() + 120
        while len(closed) < len(clients) and asyncio.get_running_loop().time() < deadline:
            await asyncio.wait(clients, timeout=1)
        assert len(closed) == len(clients), \
            f"{len(clients) - len(closed)} slowloris connections still open"
    finally:
        attacking.cancel()
        for task in clients:
            task.cancel()
        await asyncio.gather(attacking, *clients, return_exceptions=True)
    answered = [raw for raw in closed.values() if raw]
    assert answered and all(parse(raw)[0] == 408 for raw in answered)
    assert json.loads(parse(answered[0])[2])["error"]["code"] == "request_timeout"
    after = rss(server)
    print(f"{len(clients)} slowloris connections: server RSS {before >> 20} -> {after >> 20} MiB")
    assert after - before < RSS_BOUND


async def test_an_idle_connection_that_never_sends_is_closed(server: InferdProcess) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        assert await asyncio.wait_for(reader.read(100), 60) == b""  # closed, nothing sent
    finally:
        writer.close()


# -- bodies -----------------------------------------------------------------------------------
async def test_a_50_megabyte_chunked_body_gets_413_without_being_buffered(
        server: InferdProcess, user_key: str) -> None:
    before = rss(server)
    chunk = b"a" * 65536
    total = 50 * 1024 * 1024

    def chunks() -> Iterator[bytes]:
        for _ in range(total // len(chunk)):
            yield b"%x\r\n%s\r\n" % (len(chunk), chunk)
        yield b"0\r\n\r\n"

    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {user_key}\r\nContent-Type: application/json\r\n"
            f"Transfer-Encoding: chunked\r\n\r\n").encode()
    raw, sent = await exchange(server, head, chunks())
    after = rss(server)
    print(f"50 MB chunked body: answered after {sent >> 20} MiB sent; "
          f"server RSS {before >> 20} -> {after >> 20} MiB")
    status, _headers, body = parse(raw)
    assert status == 413, raw[:300]
    error = json.loads(body)["error"]
    assert error["code"] == "payload_too_large" and str(MAX_BODY) in error["message"]
    assert after - before < RSS_BOUND


def chat_body(size: int) -> bytes:
    """A chat request of ``size`` bytes for the echo model."""
    start, end = b'{"model": "echo", "max_tokens": 4, "messages": [{"role": "user", "content": "', \
        b'"}]}'
    return start + b"x" * (size - len(start) - len(end)) + end


def chat_head(key: str, length: int) -> bytes:
    return (f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n").encode()


async def paced(server: InferdProcess, head: bytes, pieces: list[bytes],
                pause: float) -> bytes:
    """Send ``head``, then each piece ``pause`` seconds after the one before, until the server
    answers or closes; returns its answer (b"" for a close without one). The pause is the
    client's pace, not a bound the test asserts on."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(head)
    read = asyncio.create_task(reader.read(65536))
    try:
        for piece in pieces:
            await asyncio.wait([read], timeout=pause)
            if read.done():
                break
            try:
                writer.write(piece)
                await writer.drain()
            except ConnectionError:
                break
        try:
            data = await asyncio.wait_for(read, 120)
            while data and not complete(data):
                more = await asyncio.wait_for(reader.read(65536), 60)
                if not more:
                    break
                data += more
        except ConnectionError:
            data = b""
        return data
    finally:
        read.cancel()
        writer.close()


async def test_a_body_sent_a_byte_now_and_then_gets_408_and_is_closed(
        server: InferdProcess, user_key: str) -> None:
    """A complete head, then the body one byte every half second (slowloris on the body):
    never a pause over the body timeout, but far under the minimum rate: 408, closed, while a
    normal request is served meanwhile."""
    body = chat_body(4096)
    pieces = [body[i:i + 1] for i in range(len(body))]
    slow = asyncio.create_task(paced(server, chat_head(user_key, len(body)), pieces, 0.5))
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        response = await http.get("/v1/models", headers={"Authorization": f"Bearer {user_key}"})
        assert response.status_code == 200
    raw = await asyncio.wait_for(slow, 300)  # 4,096 half seconds if never cut
    status, headers, answer = parse(raw)
    assert status == 408, raw[:300]
    assert headers["connection"] == "close"
    error = json.loads(answer)["error"]
    assert error["code"] == "request_timeout" and "body" in error["message"]


async def test_a_body_that_stops_arriving_gets_408(server: InferdProcess,
                                                   user_key: str) -> None:
    body = chat_body(4096)
    raw = await paced(server, chat_head(user_key, len(body)) + body[:1000], [], 0)
    status, headers, answer = parse(raw)
    assert status == 408, raw[:300]
    assert headers["connection"] == "close"
    assert json.loads(answer)["error"]["code"] == "request_timeout"


async def test_a_long_upload_at_a_normal_rate_is_served(server: InferdProcess,
                                                        user_key: str) -> None:
    """A body sent in 16 KiB pieces four times a second, for longer than the body timeout:
    at 64 KiB/s it is far over the minimum rate and never pauses long, so it is served."""
    size = 16 * 1024 * (4 * int(BODY_TIMEOUT) + 8)
    body = chat_body(size)
    pieces = [body[i:i + 16 * 1024] for i in range(0, len(body), 16 * 1024)]
    raw = await paced(server, chat_head(user_key, len(body)), pieces, 0.25)
    status, _headers, answer = parse(raw)
    assert status == 200, raw[:300]
    assert json.loads(answer)["choices"][0]["message"]["role"] == "assistant"


# -- pathological JSON ------------------------------------------------------------------------
def _nested(depth: int) -> bytes:
    return b'{"model": "echo", "messages": ' + b"[" * depth + b"]" * depth + b"}"


HOSTILE_BODIES: list[tuple[str, bytes]] = [
    ("nesting depth 10,000", _nested(10_000)),
    ("nesting depth 10,000 in a value", b'{"model": "echo", "messages": [{"role": "user", '
                                        b'"content": "x"}], "metadata": '
                                        + b'{"a":' * 10_000 + b"1" + b"}" * 10_000 + b"}"),
    ("10,000 messages", json.dumps({"model": "echo", "messages": [
        {"role": "user", "content": f"message {i}"} for i in range(10_000)]}).encode()),
    ("invalid UTF-8", b'{"model": "echo", "messages": [{"role": "user", "content": "\xff\xfe'
                      b'\xc3\x28"}]}'),
    ("NaN", b'{"model": "echo", "messages": [{"role": "user", "content": "x"}], '
            b'"temperature": NaN}'),
    ("Infinity", b'{"model": "echo", "messages": [{"role": "user", "content": "x"}], '
                 b'"top_p": Infinity, "max_tokens": -Infinity}'),
    ("max_tokens 10^12", json.dumps({"model": "echo", "max_tokens": 10**12, "messages": [
        {"role": "user", "content": "x"}]}).encode()),
    ("max_tokens 10^30", json.dumps({"model": "echo", "max_tokens": 10**30, "messages": [
        {"role": "user", "content": "x"}]}).encode()),
    ("negative n", json.dumps({"model": "echo", "n": -5, "messages": [
        {"role": "user", "content": "x"}]}).encode()),
]
ROUTES = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses"]


def test_pathological_json_gets_a_clear_4xx(server: InferdProcess, user_key: str) -> None:
    before = rss(server)
    seen: list[str] = []
    with httpx.Client(base_url=server.url, timeout=120,
                      headers={"Authorization": f"Bearer {user_key}",
                               "Content-Type": "application/json"}) as http:
        for route in ROUTES:
            for name, body in HOSTILE_BODIES:
                response = http.post(route, content=body)
                if name == "10,000 messages" and route == "/v1/chat/completions" \
                        and response.status_code == 200:
                    continue  # accepted: the echo model answers any number of messages
                assert_openai_error(response)
                seen.append(f"{route} {name}: {response.status_code}")
    after = rss(server)
    print("\n".join(seen))
    print(f"pathological JSON: server RSS {before >> 20} -> {after >> 20} MiB")
    assert after - before < RSS_BOUND


IDS = ["-1", "-99999999999999999999", "99999999999999999999999999999", "1e309", "0x10",
       "%00", "a" * 5000]
ID_ROUTES = ["/v1/jobs/{id}", "/v1/files/{id}", "/v1/batches/{id}", "/v1/responses/{id}",
             "/v1/models/{id}"]


def test_negative_and_huge_ids_get_a_clear_4xx(server: InferdProcess, user_key: str) -> None:
    with httpx.Client(base_url=server.url, timeout=60,
                      headers={"Authorization": f"Bearer {user_key}"}) as http, \
            httpx.Client(base_url=server.url, timeout=60,
                         headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as admin:
        for template in ID_ROUTES:
            for value in IDS:
                assert_openai_error(http.get(template.replace("{id}", value)))
        for value in IDS:
            assert_openai_error(admin.get(f"/admin/v1/keys/{value}"))
            assert_openai_error(admin.delete(f"/admin/v1/keys/{value}"))


# -- metrics ----------------------------------------------------------------------------------
def test_made_up_model_names_do_not_grow_the_metrics(server: InferdProcess,
                                                     user_key: str) -> None:
    names = [f"made-up-{uuid.uuid4().hex}" for _ in range(300)]
    with httpx.Client(base_url=server.url, timeout=60,
                      headers={"Authorization": f"Bearer {user_key}"}) as http:
        size_before = len(http.get("/metrics").content)
        for name in names:
            response = http.post("/v1/chat/completions", json={
                "model": name, "messages": [{"role": "user", "content": "x"}]})
            assert_openai_error(response, 404)
        for name in names[:20]:
            assert_openai_error(http.post("/v1/embeddings", json={"model": name, "input": "x"}),
                                404)
        assert http.post("/v1/chat/completions", json={
            "model": "echo", "messages": [{"role": "user", "content": "x"}]}).status_code == 200
        metrics = http.get("/metrics").text
    assert not any(name in metrics for name in names)
    unknown = [line for line in metrics.splitlines() if line.startswith(
        'inferd_requests_total{endpoint="chat",model="_unknown",status="404"}')]
    assert unknown and float(unknown[0].split()[-1]) >= len(names), unknown
    assert 'model="echo"' in metrics  # known models keep their own label
    # a few new series at most (the unknown model's, the echo model's), not one per name
    assert len(metrics.encode()) - size_before < 20_000, len(metrics.encode()) - size_before
