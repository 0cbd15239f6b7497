"""A lean keep-alive HTTP/1.1 client for the non-streamed JSON calls of the ``http`` replica.

A proxied chat completion needs little from a client: write one request, parse one response
(``Content-Length``, chunked, or until close) and keep the connection for the next request.
aiohttp's client does much more per request (request and response objects, header multidicts,
payload lookup, stream readers): py-spy put it at about a third of the gateway's CPU per
request. ``UpstreamPool`` writes the request in one call and parses the answer with httptools
(the parser uvicorn uses). Streams still go through aiohttp (their per-request cost is spread
over the whole stream).

A request that fails on a reused keep-alive connection before any byte of the answer arrived
(the upstream closed the idle connection as we wrote) is sent once more on a new connection,
as HTTP clients do for stale keep-alive connections.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from typing import cast
from urllib.parse import urlsplit

import httptools


class UpstreamClosed(ConnectionError):
    """The connection ended before a complete answer (``mid_answer``: after part of it)."""

    def __init__(self, message: str, mid_answer: bool = False) -> None:
        super().__init__(message)
        self.mid_answer = mid_answer


class _Connection(asyncio.Protocol):
    """One upstream connection: one request at a time, answers parsed as they arrive."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.parts: list[bytes] = []
        self.received = False  # a byte of the current answer arrived
        self.open = True
        self.keep_alive = True
        self.framed = False  # the answer declares its end (length or chunked)

    # -- asyncio.Protocol -----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamClosed(f"invalid HTTP answer: {exc}", mid_answer=True))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        if self.waiter is not None and self.received and not self.framed:
            self._complete(False)  # an answer delimited by the end of the connection
        why = f": {exc}" if exc else ""
        if self.received:
            self._fail(UpstreamClosed(f"the upstream closed the connection mid-answer{why}",
                                      mid_answer=True))
        else:
            self._fail(UpstreamClosed(f"connection closed by the upstream{why}"))

    # -- httptools callbacks ----------------------------------------------------------------
    def on_header(self, name: bytes, _value: bytes) -> None:
        if name.lower() in (b"content-length", b"transfer-encoding"):
            self.framed = True

    def on_body(self, body: bytes) -> None:
        self.parts.append(body)

    def on_message_complete(self) -> None:
        self._complete(self.parser.should_keep_alive())

    # -- the client side --------------------------------------------------------------------
    def request(self, data: bytes) -> asyncio.Future[tuple[int, bytes]]:
        assert self.transport is not None
        self.received = False
        self.framed = False
        self.parts = []
        self.waiter = waiter = self.loop.create_future()
        self.transport.write(data)
        return waiter

    def _complete(self, keep_alive: bool) -> None:
        waiter, self.waiter = self.waiter, None
        self.keep_alive = keep_alive
        if waiter is not None and not waiter.done():
            waiter.set_result((self.parser.get_status_code(), b"".join(self.parts)))
        self.parts = []

    def _fail(self, exc: Exception) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def close(self) -> None:
        self.open = False
        if self.transport is not None:
            self.transport.close()


def _expire(waiter: asyncio.Future[tuple[int, bytes]]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError("no answer in time"))


# How often the answers in flight are checked for their deadline, at most: a request's timeout
# is kept to within a quarter of itself (and a second), with one timer for the whole pool
# instead of one per request.
SWEEP_SECONDS = 1.0


class UpstreamPool:
    """Pooled keep-alive connections to one upstream, for JSON POSTs.

    ``base_url`` is the upstream's API root (``http://host:port/v1``); ``headers`` are sent with
    every request (``Content-Type``, the upstream's ``Authorization``). ``resolve`` (host, port)
    returns the addresses a new connection may go to (an allow-list's check at connect time);
    without it the host is connected to as it resolves.
    """

    def __init__(self, base_url: str, headers: dict[str, str], *, max_connections: int = 256,
                 connect_timeout: float = 5.0, timeout: float = 600.0,
                 resolve: Callable[[str, int], Awaitable[list[str]]] | None = None) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.ssl: ssl.SSLContext | None = (ssl.create_default_context()
                                           if parts.scheme == "https" else None)
        self.prefix = parts.path.rstrip("/").encode()
        lines = [f"Host: {parts.netloc}", *(f"{k}: {v}" for k, v in headers.items())]
        self._head = ("\r\n".join(lines) + "\r\n").encode("latin-1")
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self.resolve = resolve
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(max_connections)
        self._max_idle = max_connections
        # the answers awaited and the loop time each is given up at (checked by ``_sweep``)
        self._deadlines: dict[asyncio.Future[tuple[int, bytes]], float] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._sweep_every = max(0.01, min(SWEEP_SECONDS, timeout / 4))

    async def post(self, path: str, body: bytes,
                   headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        """POST ``body`` to ``prefix + path`` (with ``headers`` besides the pool's own: a
        trace's ``traceparent``); returns the status and the whole answer body.

        Raises ``OSError`` (``UpstreamClosed``, connection refused...) or
        ``TimeoutError``.
        """
        head = self._head
        if headers:
            head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode("latin-1")
        data = b"POST %s%s HTTP/1.1\r\n%sContent-Length: %d\r\n\r\n%s" % (
            self.prefix, path.encode(), head, len(body), body)
        async with self._slots:
            for attempt in (1, 2):
                conn = self._take()
                reused = conn is not None
                if conn is None:
                    conn = await self._connect()
                try:
                    status, answer = await self._wait(conn.request(data))
                except UpstreamClosed:
                    conn.close()
                    if reused and not conn.received and attempt == 1:
                        continue  # a stale keep-alive connection: once more on a new one
                    raise
                except BaseException:  # timed out or cancelled: the connection is mid-answer
                    conn.close()
                    raise
                if conn.keep_alive and conn.open and len(self._idle) < self._max_idle:
                    self._idle.append(conn)
                else:
                    conn.close()
                return status, answer
        raise AssertionError("unreachable")

    def _take(self) -> _Connection | None:
        idle = self._idle
        while idle:
            conn = idle.pop()
            if conn.open:
                return conn
        return None

    async def _connect(self) -> _Connection:
        return await asyncio.wait_for(self._open(), self.connect_timeout)

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        if self.resolve is None:
            _transport, conn = await loop.create_connection(
                lambda: _Connection(loop), self.host, self.port, ssl=self.ssl)
            return conn
        addresses = await self.resolve(self.host, self.port)  # each one checked
        failure: OSError | None = None
        for address in addresses:
            try:
                _transport, conn = await loop.create_connection(
                    lambda: _Connection(loop), address, self.port, ssl=self.ssl,
                    server_hostname=self.host if self.ssl else None)
                return conn
            except OSError as exc:
                failure = exc
        raise failure or OSError(f"no address for {self.host}")

    async def _wait(self, waiter: asyncio.Future[tuple[int, bytes]]) -> tuple[int, bytes]:
        loop = waiter.get_loop()
        deadlines = self._deadlines
        deadlines[waiter] = loop.time() + self.timeout
        if self._sweeper is None:
            self._sweeper = loop.call_later(self._sweep_every, self._sweep, loop)
        try:
            return await waiter
        finally:
            del deadlines[waiter]

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        """Fail the answers past their deadline; check again while any is awaited."""
        now = loop.time()
        for waiter in [w for w, deadline in self._deadlines.items() if deadline <= now]:
            _expire(waiter)
        self._sweeper = (loop.call_later(self._sweep_every, self._sweep, loop)
                         if self._deadlines else None)

    def close(self) -> None:
        for conn in self._idle:
            conn.close()
        self._idle.clear()
