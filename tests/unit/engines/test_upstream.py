"""The lean upstream client against real sockets: framing, keep-alive, stale connections,
failures and timeouts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from inferd.engines.upstream import UpstreamClosed, UpstreamPool

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length"))
    return head, await reader.readexactly(length)


class Server:
    """A loopback server that counts its connections and runs ``handler`` on each."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


Serve = Callable[[Handler], Awaitable[tuple["Server", str]]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> tuple[Server, str]:
        server = Server(handler)
        srv = await asyncio.start_server(server._serve, "127.0.0.1", 0)
        servers.append(srv)
        port = srv.sockets[0].getsockname()[1]
        return server, f"http://127.0.0.1:{port}/v1"

    yield start
    for srv in servers:
        srv.close()
        await srv.wait_closed()


def _echo_length(seen: list[tuple[bytes, bytes]]) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head, body = await _read_request(reader)
            seen.append((head, body))
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()
    return handler


async def test_keep_alive_reuses_one_connection_and_sends_the_headers(serve: Serve) -> None:
    seen: list[tuple[bytes, bytes]] = []
    server, url = await serve(_echo_length(seen))
    pool = UpstreamPool(url, {"Content-Type": "application/json",
                              "Authorization": "Bearer up-key"})
    for i in range(5):
        assert await pool.post("/chat/completions", b'{"n":%d}' % i) == (200, b'{"n":%d}' % i)
    assert server.connections == 1
    head = seen[0][0]
    assert head.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert b"Authorization: Bearer up-key" in head and b"Host: 127.0.0.1:" in head
    pool.close()


async def test_chunked_and_close_delimited_answers(serve: Serve) -> None:
    async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"3\r\n{\"a\r\n4\r\n\":1}\r\n0\r\n\r\n")
        await writer.drain()
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")
        await writer.drain()
        writer.close()

    _server, url = await serve(chunked)
    pool = UpstreamPool(url, {})
    assert await pool.post("/x", b"{}") == (201, b'{"a":1}')
    assert await pool.post("/x", b"{}") == (200, b"until the end")
    pool.close()


async def test_a_stale_keep_alive_connection_is_replaced(serve: Serve) -> None:
    async def one_answer_then_hang_up(reader: asyncio.StreamReader,
                                      writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await reader.readuntil(b"\r\n\r\n")  # the next request arrives: close without answer

    server, url = await serve(one_answer_then_hang_up)
    pool = UpstreamPool(url, {})
    assert await pool.post("/x", b"{}") == (200, b"ok")
    assert await pool.post("/x", b"{}") == (200, b"ok")  # sent again on a new connection
    assert server.connections == 2
    pool.close()


async def test_a_fresh_connection_closed_mid_answer_fails(serve: Serve) -> None:
    async def broken(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
        await writer.drain()

    _server, url = await serve(broken)
    pool = UpstreamPool(url, {})
    with pytest.raises(UpstreamClosed):
        await pool.post("/x", b"{}")


async def test_refused_and_timed_out(serve: Serve) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        await asyncio.sleep(5)

    _server, url = await serve(silent)
    pool = UpstreamPool(url, {}, timeout=0.2)
    with pytest.raises(TimeoutError):
        await pool.post("/x", b"{}")
    assert pool._idle == []  # a connection mid-answer is never reused
    srv = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    srv.close()
    await srv.wait_closed()
    with pytest.raises(OSError):
        await UpstreamPool(f"http://127.0.0.1:{port}/v1", {}).post("/x", b"{}")
