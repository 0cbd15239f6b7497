"""The HTTP/1.1 protocol the server runs: uvicorn's httptools protocol with bounds on the
request head and on the pace of the body, which uvicorn does not have.

Before a request is authenticated, all a client can make the server hold is its request head
(request line and headers). uvicorn's httptools protocol buffers a head of any size for as long
as the client likes: a few connections sending endless headers grow memory without bound, and
connections that send a header byte now and then (slowloris) are never closed, because every
byte cancels the keep-alive timer. ``GuardedHttpToolsProtocol`` adds the two bounds other
servers have (nginx ``large_client_header_buffers`` and ``client_header_timeout``, Node's
``maxHeaderSize`` and ``headersTimeout``):

- **size**: a head over ``max_head_bytes`` is answered 431 ``headers_too_large`` and the
  connection is closed; the parser never holds more than the limit and one read;
- **time**: a head must be complete ``head_timeout`` seconds after its first byte (or after the
  connection opened): otherwise 408 ``request_timeout`` (nothing when no byte came) and close.
  The clock runs only while no request of the connection is being answered, so a long
  generation is not cut; the idle time between requests stays uvicorn's keep-alive timeout.

A complete head starts the request's task, which then waits for the body: a client sending the
body a byte now and then (slowloris on the body) would hold the connection and the task for as
long as it likes. ``GuardedHttpToolsProtocol`` bounds the body's pace too (nginx
``client_body_timeout``, Apache ``mod_reqtimeout`` ``body=...,MinRate=...``):

- **body**: after the head, the body must keep arriving: no pause longer than
  ``body_timeout`` seconds, and on average at least ``body_min_rate`` bytes a second after the
  first ``body_timeout`` seconds (each ``body_min_rate`` bytes received extend the deadline by
  a second). Otherwise 408 ``request_timeout`` (or, once the answer has started, the
  connection closed). The clock stops while the server itself holds the body back (reading
  paused until the application reads what it has, or ``Expect: 100-continue`` not yet
  answered), so an upload at any normal rate passes, however long.

Its answers, and uvicorn's 400 for a request that does not parse, are in the OpenAI error shape.

It also writes what one turn of the event loop sends on a connection in one system call
(``CoalescingTransport``): uvicorn writes a response's head and its body apart, which costs a
second system call and a second wake-up of the client for every answer.

It uses uvicorn's internals (the parser, the request cycle, flow control, the server state):
``pyproject.toml`` pins uvicorn to the release series it was checked against, and
``uvicorn_internals_missing`` (run at start and by the tests) names what a release lacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
from collections.abc import Callable
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from inferd.errors import HeadersTooLarge, InferdError, InvalidRequest, RequestTimeout, envelope
from inferd.http.disconnect import WATCH

# A refused connection is still read (and what it sends dropped) after the answer, so that a
# client still sending its head reads the answer instead of a connection reset: it is closed
# once the client has sent nothing for LINGER_SECONDS, or LINGER_MAX_SECONDS after the answer
# (nginx's ``lingering_timeout`` and ``lingering_time``). A fixed second was not enough: a busy
# client still sending then lost the answer to the reset.
LINGER_SECONDS = 5.0
LINGER_MAX_SECONDS = 30.0
# Seconds a late body is given before it is refused, so that bytes that came while the process
# was not running (a busy machine) are read first: the loop runs due timers before it reads.
OVERDUE_GRACE_SECONDS = 0.2


class CoalescingTransport:
    """A connection's transport whose writes within one turn of the event loop go out together
    (at the end of the turn, or before the connection is closed or half-closed)."""

    __slots__ = ("_loop", "_pending", "transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.transport = transport
        self._loop = loop
        self._pending: list[bytes] | None = None

    def write(self, data: bytes) -> None:
        pending = self._pending
        if pending is None:
            self._pending = [data]
            self._loop.call_soon(self.flush)
        else:
            pending.append(data)

    def flush(self) -> None:
        pending, self._pending = self._pending, None
        if not pending or self.transport.is_closing():
            return
        if len(pending) == 1:
            self.transport.write(pending[0])
        else:
            self.transport.writelines(pending)

    def write_eof(self) -> None:
        self.flush()
        self.transport.write_eof()

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def pause_reading(self) -> None:
        self.transport.pause_reading()

    def resume_reading(self) -> None:
        self.transport.resume_reading()

    def __getattr__(self, name: str) -> Any:  # the rest of asyncio.Transport, as it is
        return getattr(self.transport, name)


class ConnectionWatch:
    """Calls back what the requests of a connection ask to hear of its loss (the scope
    extension ``inferd.http.disconnect.WATCH``): a request notices a client that went away
    without a task of its own waiting for ``http.disconnect``."""

    __slots__ = ("callbacks", "flow", "lost")

    def __init__(self, flow: Any) -> None:
        self.flow = flow
        self.callbacks: list[Callable[[], None]] = []
        self.lost = False

    def add(self, gone: Callable[[], None]) -> None:
        if self.lost:
            gone()
            return
        self.flow.resume_reading()  # a lost connection is noticed only while reading
        self.callbacks.append(gone)

    def discard(self, gone: Callable[[], None]) -> None:
        with contextlib.suppress(ValueError):
            self.callbacks.remove(gone)

    def connection_lost(self) -> None:
        self.lost = True
        callbacks, self.callbacks = self.callbacks, []
        for gone in callbacks:
            gone()


def error_bytes(error: InferdError, default_headers: list[tuple[bytes, bytes]]) -> bytes:
    """A complete HTTP/1.1 response for ``error`` in the OpenAI shape, closing the connection."""
    body = orjson.dumps(envelope(error))
    status = error.status
    lines = [b"HTTP/1.1 %d %s\r\n" % (status, http.HTTPStatus(status).phrase.encode())]
    lines += [name + b": " + value + b"\r\n" for name, value in default_headers]
    lines += [b"content-type: application/json\r\n",
              b"content-length: %d\r\n" % len(body), b"connection: close\r\n\r\n", body]
    return b"".join(lines)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a size limit and a deadline on each request head."""

    max_head_bytes: int = 64 * 1024
    head_timeout: float = 10.0
    body_timeout: float = 30.0
    body_min_rate: float = 500.0  # bytes a second

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True  # between two requests, or reading a request's head
        self._head_bytes = 0  # bytes of the current head received so far
        self._head_timer: asyncio.TimerHandle | None = None
        self._refused = False
        self._linger_timer: asyncio.TimerHandle | None = None
        self._linger_end = 0.0  # the loop time a lingering connection is closed at the latest
        self._in_body = False  # a request's head is complete, its body not yet
        self._body_started = 0.0  # when the body's clock (re)started
        self._body_last = 0.0  # when a byte of it last arrived
        self._body_bytes = 0  # bytes received since the clock started
        self._body_overdue = False  # found late once: refused if still late after the grace
        self._body_timer: asyncio.TimerHandle | None = None
        self._watch: ConnectionWatch  # set with the connection

    # -- the request head's clock -------------------------------------------------------------
    def _answering(self) -> bool:
        """Whether a request of this connection is being answered."""
        return self.cycle is not None and not self.cycle.response_complete

    def _arm(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or self._answering():
            return  # a pipelined head waits for the answer before it; armed again after it
        if self._in_head and self._head_bytes:
            self._refuse(RequestTimeout(
                f"The request head was not complete within {self.head_timeout:g} seconds."))
        else:
            self.transport.close()

    # -- the request body's clock -------------------------------------------------------------
    def _start_body_clock(self) -> None:
        """Start (or restart) the body's clock; its timer is armed by ``data_received`` once
        the bytes at hand are parsed, so a request whose body came with its head costs none."""
        self._in_body = True
        self._body_started = self._body_last = self.loop.time()
        self._body_bytes = 0
        self._body_overdue = False

    def _arm_body(self, when: float) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
        self._body_timer = self.loop.call_at(when, self._body_timed_out)

    def _stop_body_clock(self) -> None:
        self._in_body = False
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _body_deadline(self) -> float:
        """When the body is late: a pause over ``body_timeout``, or fewer bytes than
        ``body_min_rate`` a second beyond the first ``body_timeout`` seconds."""
        return min(self._body_last + self.body_timeout,
                   self._body_started + self.body_timeout
                   + self._body_bytes / self.body_min_rate)

    def _held_back(self) -> bool:
        """Whether the server, not the client, holds the body back."""
        return self.flow.read_paused or (
            self.cycle is not None and self.cycle.waiting_for_100_continue)

    def _body_timed_out(self) -> None:
        self._body_timer = None
        if not self._in_body or self.transport.is_closing():
            return
        if self._held_back():
            self._start_body_clock()  # the client could not send: its clock starts again
            self._arm_body(self._body_started + self.body_timeout)
            return
        deadline, now = self._body_deadline(), self.loop.time()
        if now < deadline:
            self._body_overdue = False
            self._arm_body(deadline)
            return
        if not self._body_overdue:  # what has come meanwhile is read before refusing
            self._body_overdue = True
            self._arm_body(now + OVERDUE_GRACE_SECONDS)
            return
        self._stop_body_clock()
        if self.cycle is not None and self.cycle.response_started:
            self.transport.close()  # an answer is under way: no other can be sent
            return
        self._refuse(RequestTimeout(
            f"The request body did not arrive in time (a pause over "
            f"{self.body_timeout:g} seconds, or under {self.body_min_rate:g} bytes a second)."))

    # -- uvicorn's protocol -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        coalescing = CoalescingTransport(transport, self.loop)
        super().connection_made(coalescing)  # type: ignore[arg-type]
        self._watch = ConnectionWatch(self.flow)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._linger_timer is not None:
            self._linger_timer.cancel()
        self._stop_body_clock()
        super().connection_lost(exc)
        self._watch.connection_lost()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            if self._linger_timer is not None:
                self._linger()  # still sending: read on
            return  # answered and closing: dropped
        if self._in_head:
            self._head_bytes += len(data)
        elif self._in_body:
            self._body_bytes += len(data)
            self._body_last = self.loop.time()
        super().data_received(data)
        # a head still in part: its clock runs (a whole head, the usual case, costs no timer)
        if self._in_head and self._head_bytes and not self._answering():
            self._arm()
        if self._in_body and self._body_timer is None and not self._refused:
            self._arm_body(self._body_deadline())
        if self._in_head and self._head_bytes > self.max_head_bytes \
                and not self.transport.is_closing():
            if self._answering():
                self.flow.pause_reading()  # refused once the answer before it is sent
            else:
                self._refuse_head()

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        self._disarm()
        self.scope["extensions"] = {WATCH: self._watch}  # type: ignore[dict-item]
        super().on_headers_complete()
        if not (self.parser.should_upgrade() and self._should_upgrade()):
            self._start_body_clock()  # stopped by on_message_complete

    def on_message_complete(self) -> None:
        self._stop_body_clock()
        super().on_message_complete()
        self._in_head = True

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.transport.is_closing() or self._answering() or not self._in_head:
            return
        if self._head_bytes > self.max_head_bytes:
            self._refuse_head()
        elif self._head_bytes:
            self._arm()  # a pipelined head arrived in part while the answer before it ran

    def send_400_response(self, msg: str) -> None:
        self._refuse(InvalidRequest(msg, code="invalid_http"), linger=False)

    # -- refusing -----------------------------------------------------------------------------
    def _refuse_head(self) -> None:
        self._refuse(HeadersTooLarge(
            f"The request line and headers are larger than the limit of "
            f"{self.max_head_bytes} bytes."))

    def _refuse(self, error: InferdError, *, linger: bool = True) -> None:
        """Answer ``error`` and close; with ``linger``, once the client has stopped sending
        (a client still sending would otherwise get a reset, not the answer)."""
        self._refused = True
        self._disarm()
        self._stop_body_clock()
        self.logger.debug("refused a connection: %s", error.message)
        self.transport.write(error_bytes(error, self.server_state.default_headers))
        if not linger or not self.transport.can_write_eof():
            self.transport.close()
            return
        self.transport.write_eof()
        self.flow.resume_reading()
        self._linger_end = self.loop.time() + LINGER_MAX_SECONDS
        self._linger()

    def _linger(self) -> None:
        """Close after ``LINGER_SECONDS`` without data from the client, at the latest at
        ``_linger_end`` (the client's own close ends it sooner)."""
        if self._linger_timer is not None:
            self._linger_timer.cancel()
        delay = max(0.0, min(LINGER_SECONDS, self._linger_end - self.loop.time()))
        self._linger_timer = self.loop.call_later(delay, self.transport.close)


# What this module uses of uvicorn beyond asyncio's protocol interface (checked by
# ``uvicorn_internals_missing``): the protocol's methods it extends or calls, the state it
# reads (set by the protocol's constructor), and the state of a request cycle, of the flow
# control and of the server it reads.
PROTOCOL_METHODS = ("connection_made", "connection_lost", "data_received", "on_headers_complete",
                    "on_message_complete", "on_response_complete", "send_400_response",
                    "_should_upgrade")
PROTOCOL_STATE = ("loop", "logger", "parser", "server_state", "transport", "flow", "cycle")
CYCLE_STATE = ("response_started", "response_complete", "waiting_for_100_continue")
FLOW_STATE = ("read_paused", "pause_reading", "resume_reading")
SERVER_STATE = ("default_headers",)


def uvicorn_internals_missing() -> list[str]:
    """What ``GuardedHttpToolsProtocol`` uses of uvicorn and the installed uvicorn lacks (an
    empty list when everything is there)."""
    import uvicorn
    from uvicorn.protocols.http.flow_control import FlowControl
    from uvicorn.protocols.http.httptools_impl import RequestResponseCycle
    from uvicorn.server import ServerState

    async def app(scope: Any, receive: Any, send: Any) -> None:  # pragma: no cover - not run
        pass

    missing = [f"HttpToolsProtocol.{name}()" for name in PROTOCOL_METHODS
               if not callable(getattr(HttpToolsProtocol, name, None))]
    loop = asyncio.new_event_loop()
    try:
        state = ServerState()
        config = uvicorn.Config(app, http=HttpToolsProtocol, log_config=None)
        protocol = HttpToolsProtocol(config, state, {}, _loop=loop)
        unused: Any = None  # what the flow control and the cycle only store
        flow = FlowControl(unused)
        cycle = RequestResponseCycle(
            scope=unused, transport=unused, flow=flow, logger=protocol.logger,
            access_logger=protocol.logger, access_log=False, default_headers=[],
            message_event=asyncio.Event(), expect_100_continue=False, keep_alive=True,
            on_response=lambda: None)
    except TypeError as exc:  # a constructor takes other arguments
        return [*missing, f"a constructor's arguments: {exc}"]
    finally:
        loop.close()
    for what, obj, names in (("HttpToolsProtocol", protocol, PROTOCOL_STATE),
                             ("RequestResponseCycle", cycle, CYCLE_STATE),
                             ("FlowControl", flow, FLOW_STATE),
                             ("ServerState", state, SERVER_STATE)):
        missing += [f"{what}.{name}" for name in names if not hasattr(obj, name)]
    return missing


def guarded_protocol(max_head_bytes: int, head_timeout: float, body_timeout: float,
                     body_min_rate: float) -> type[GuardedHttpToolsProtocol]:
    """The protocol class for uvicorn's ``http`` setting, with these limits; ``RuntimeError``
    when the installed uvicorn lacks what the class uses (a release it was not checked
    against)."""
    missing = uvicorn_internals_missing()
    if missing:
        import uvicorn

        raise RuntimeError(f"uvicorn {uvicorn.__version__} lacks what inferd.http.server uses "
                           f"({', '.join(missing)}): install the release series pyproject.toml "
                           "names")
    return type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,),
                {"max_head_bytes": max_head_bytes, "head_timeout": head_timeout,
                 "body_timeout": body_timeout, "body_min_rate": body_min_rate})
