"""What the remote engines (``http``, ``triton``) share: one pooled HTTP session per replica,
the mapping of upstream failures onto inferd's errors, and reading an SSE body line by line.

Failures the router may retry on another replica (the connection failed or timed out, the
upstream answered 5xx or 429 before the first byte) raise ``UpstreamUnavailable`` (a timeout:
its subclass ``UpstreamTimeout``); an upstream's verdict on the request itself (400, 413, 422)
is the client's problem and is passed through. ``transport_error`` is the one mapping of a
transport exception (of aiohttp or of the lean pool) onto these errors.

Redirects are never followed: a replica answering 3xx would otherwise send the request, with
its credential, to wherever the ``Location`` points. With an allow-list (``RemoteSpec.allow``)
every connection is checked when it is made: a host name is resolved and its addresses checked
right before connecting, so a name rebound to an address outside the list is refused.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from inferd.engines.base import Engine
from inferd.errors import (
    InferdError,
    InvalidRequest,
    PayloadTooLarge,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from inferd.jsontypes import JsonObject
from inferd.outbound import FORWARDED_HEADER, HostAllowList

# aiohttp is imported when a remote replica starts or fails: the catalogue and the router
# import this module in every process, most of which have no remote replica.
if TYPE_CHECKING:
    import aiohttp

__all__ = ["RemoteEngine", "RemoteSpec", "UpstreamUnavailable", "transport_error"]

log = logging.getLogger("inferd.engines")


def transport_error(exc: BaseException, what: str,
                    failed: str = "could not be reached") -> UpstreamUnavailable:
    """The error for a transport failure of ``what`` (e.g. "The replica of 'm'"): a timeout,
    a connection or protocol failure (``what`` ``failed``), or an answer that is not JSON."""
    if isinstance(exc, TimeoutError):
        return UpstreamTimeout(f"{what} timed out.")
    if isinstance(exc, orjson.JSONDecodeError):
        return UpstreamUnavailable(f"{what} answered with invalid JSON.")
    return UpstreamUnavailable(f"{what} {failed}: {describe(exc)}")


def transport_errors() -> tuple[type[BaseException], ...]:
    """What ``transport_error`` maps (orjson's decode error is a ValueError)."""
    import aiohttp

    return TimeoutError, OSError, aiohttp.ClientError, orjson.JSONDecodeError


@dataclass
class RemoteSpec:
    """Where a remote replica lives and how to reach it. ``api_key`` is never logged."""

    url: str
    upstream_model: str = ""
    api_key: str = field(default="", repr=False)
    timeout: float = 600.0  # seconds to wait for an answer (between bytes when streaming)
    connect_timeout: float = 5.0
    max_connections: int = 256
    options: dict[str, Any] = field(default_factory=dict)
    # Where connections may go (checked at connect time); None: anywhere (tests, tools)
    allow: HostAllowList | None = field(default=None, repr=False, compare=False)


class RemoteEngine(Engine):
    """An engine that forwards to a server over HTTP through one pooled ``ClientSession``."""

    def __init__(self, name: str, spec: RemoteSpec) -> None:
        super().__init__(name)
        self.spec = spec
        self.upstream_model = spec.upstream_model or name
        self._session: aiohttp.ClientSession | None = None
        # the header tells an inferd engine that this process meters the request
        self._headers = {"Content-Type": "application/json", FORWARDED_HEADER: "1"}
        if spec.api_key:
            self._headers["Authorization"] = f"Bearer {spec.api_key}"
        # the replica's own headers (``options.headers``: an upstream's key header, a tenant)
        self._headers.update(spec.options.get("headers") or {})

    async def start(self) -> None:
        import aiohttp

        from inferd.guarded_resolver import connector_options

        connector = aiohttp.TCPConnector(limit=self.spec.max_connections, keepalive_timeout=30,
                                         ttl_dns_cache=60, **connector_options(self.spec.allow))
        timeout = aiohttp.ClientTimeout(total=None, connect=self.spec.connect_timeout,
                                        sock_read=self.spec.timeout)
        self._session = aiohttp.ClientSession(connector=connector, timeout=timeout,
                                              headers=self._headers, json_serialize=_dumps,
                                              skip_auto_headers=("User-Agent",))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def what(self) -> str:
        """How errors name this replica."""
        return f"The replica of '{self.name}'"

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise UpstreamUnavailable(f"The replica of '{self.name}' is not started.")
        return self._session

    async def probe(self) -> None:
        """Raise unless the upstream answers its health check."""
        raise NotImplementedError

    # -- calls ----------------------------------------------------------------------------
    async def post(self, url: str, body: JsonObject,
                   headers: dict[str, str] | None = None) -> aiohttp.ClientResponse:
        """POST ``body`` (with ``headers`` besides the session's); returns a 2xx response
        (headers read) or raises the mapped error."""
        try:
            response = await self.session.post(url, data=orjson.dumps(body), headers=headers,
                                               allow_redirects=False)
        except transport_errors() as exc:
            raise transport_error(exc, self.what) from exc
        if response.status >= 300:
            try:
                await self.raise_for_status(response)
            finally:
                response.release()
        return response

    async def read_json(self, response: aiohttp.ClientResponse) -> Any:
        try:
            async with response:
                return orjson.loads(await response.read())
        except transport_errors() as exc:
            raise transport_error(exc, self.what, "failed mid-answer") from exc

    async def raise_for_status(self, response: aiohttp.ClientResponse) -> None:
        raise self.status_error(response.status, await _error_message(response))

    def status_error(self, status: int, message: str) -> InferdError:
        """The error for an upstream's non-2xx answer (see the module docstring)."""
        if 300 <= status < 400:
            return UpstreamUnavailable(
                f"The replica of '{self.name}' answered a redirect ({status}); inferd does not "
                "follow redirects of replicas: point the replica URL at the final address.")
        if status in (400, 422):
            return InvalidRequest(message, code="upstream_rejected")
        if status == 413:
            return PayloadTooLarge(message)
        # 401/403/404 mean the replica is misconfigured (credentials, model name): like 429
        # and 5xx, another replica may well answer.
        return UpstreamUnavailable(
            f"The replica of '{self.name}' answered {status}: {message}")

    async def upstream_models(self) -> list[str]:
        """The models the upstream lists, for a connection test ([]: the kind has no list)."""
        return []

    async def get_json(self, url: str) -> Any:
        """GET ``url`` within a few seconds; its JSON, or the mapped error of a non-2xx."""
        import aiohttp

        try:
            async with self.session.get(url, timeout=aiohttp.ClientTimeout(total=5),
                                        allow_redirects=False) as resp:
                if resp.status >= 300:
                    raise self.status_error(resp.status, await _error_message(resp))
                return orjson.loads(await resp.read())
        except transport_errors() as exc:
            raise transport_error(exc, self.what) from exc

    async def get_ok(self, url: str) -> None:
        """GET ``url``; raise unless it answers 2xx within a few seconds."""
        import aiohttp

        try:
            async with self.session.get(url, timeout=aiohttp.ClientTimeout(total=5),
                                        allow_redirects=False) as resp:
                if resp.status >= 300:
                    raise UpstreamUnavailable(f"health check answered {resp.status}")
                await resp.read()
        except transport_errors() as exc:
            raise transport_error(exc, "health check", "failed") from exc

    async def sse_events(self, response: aiohttp.ClientResponse,
                         require_done: bool = False) -> AsyncIterator[bytes]:
        """The ``data:`` payloads of an SSE body, as they arrive; ``[DONE]`` ends it.

        A body that breaks off, or ends without ``[DONE]`` when ``require_done`` is set, raises
        ``UpstreamError``: the client's stream then ends with an error event.
        """
        import aiohttp

        try:
            async with response:
                async for line in response.content:
                    if line.startswith(b"data:"):
                        payload = line[5:].strip()
                        if payload == b"[DONE]":
                            return
                        if payload:
                            yield payload
                if require_done:
                    raise UpstreamError(
                        f"The replica of '{self.name}' ended the stream before it finished.")
        except TimeoutError as exc:
            raise UpstreamTimeout(
                f"The replica of '{self.name}' stopped sending mid-stream.") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamError(
                f"The replica of '{self.name}' broke off the stream: {describe(exc)}") from exc


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]


async def _error_message(response: aiohttp.ClientResponse) -> str:
    """The upstream's error text (OpenAI shape, Triton shape or plain text), shortened."""
    import aiohttp

    try:
        raw = await response.read()
    except aiohttp.ClientError:
        return f"HTTP {response.status}"
    return error_text(raw, response.status)


def error_text(raw: bytes, status: int) -> str:
    """The error text of an upstream's answer body (OpenAI, Triton or plain), shortened."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode("utf-8", "replace")[:500] or f"HTTP {status}"
    if isinstance(body, dict):
        error = body.get("error", body.get("detail", body))
        if isinstance(error, dict):
            return str(error.get("message", error))[:500]
        return str(error)[:500]
    return str(body)[:500]
