"""An engine's side of registering through a gateway (``INFERD_GATEWAY_URL``).

``inferd engine`` calls the gateway's ``/internal/v1/engines/{instance}`` routes with its own
key (``INFERD_ENGINE_API_KEY``): ``PUT`` registers its replicas, ``POST .../heartbeat`` keeps
them alive, ``DELETE`` removes them on a clean stop. It needs no database of the cluster, so
an engine's pod holds no secret but its own key.

The engine serves while it registers: a gateway that is not up yet (or refuses the key) is
tried again with a growing pause, never fatal. A failed heartbeat is logged and tried again
at the next beat; a heartbeat the gateway answers 404 (it lost the replicas: removed by an
admin, a new database) registers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from urllib.parse import quote

import aiohttp
import orjson

from inferd.jsontypes import JsonObject
from inferd.redact import redact_url
from inferd.settings import ClusterSettings

log = logging.getLogger("inferd.engine")
# Pauses between attempts to register: from the first to the last, doubling.
RETRY_FIRST, RETRY_MAX = 0.5, 15.0
CALL_TIMEOUT = 10.0  # seconds one call to the gateway may take
LEAVE_TIMEOUT = 5.0  # seconds a clean stop waits for the gateway to remove the replicas


class GatewayError(RuntimeError):
    """The gateway answered a call with an error status."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"{status}: {text[:300]}")
        self.status = status


class GatewayRegistration:
    """Registers this engine's models with a gateway and beats for them until closed."""

    def __init__(self, settings: ClusterSettings) -> None:
        self.gateway = settings.gateway_url.rstrip("/")
        self.instance = settings.engine_instance or socket.gethostname()
        self.url = settings.engine_url
        self.key = settings.engine_api_key
        self.every = settings.engine_heartbeat_seconds
        self.endpoint = f"{self.gateway}/internal/v1/engines/{quote(self.instance, safe='')}"
        self.models: list[str] = []
        self.registered = asyncio.Event()
        self.replicas: list[JsonObject] = []  # as the gateway answered: {"id", "model"}
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self, models: list[str]) -> None:
        """Register and beat in the background (the engine serves meanwhile)."""
        self.models = list(models)
        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        self._session = aiohttp.ClientSession(
            headers=headers, timeout=aiohttp.ClientTimeout(total=CALL_TIMEOUT))
        self._task = asyncio.create_task(self._run(), name="engine:gateway")

    async def _call(self, method: str, path: str = "", body: JsonObject | None = None
                    ) -> JsonObject:
        assert self._session is not None
        async with self._session.request(
                method, self.endpoint + path, data=orjson.dumps(body or {}),
                headers={"Content-Type": "application/json"}) as response:
            text = await response.text()
            if response.status >= 400:
                raise GatewayError(response.status, text)
            answer: JsonObject = orjson.loads(text) if text else {}
            return answer

    async def register(self) -> None:
        """One attempt; raises what failed."""
        answer = await self._call("PUT", body={"url": self.url, "models": list(self.models),
                                               "heartbeat_seconds": self.every})
        replicas = answer.get("replicas")
        self.replicas = ([r for r in replicas if isinstance(r, dict)]
                         if isinstance(replicas, list) else [])
        self.registered.set()
        log.info("registered with %s as %s at %s: %s", redact_url(self.gateway),
                 self.instance, redact_url(self.url),
                 ", ".join(f"{r.get('model')} (replica {r.get('id')})" for r in self.replicas))

    async def _register_until_done(self) -> None:
        pause = RETRY_FIRST
        while True:
            try:
                await self.register()
                return
            except Exception as exc:  # the gateway is not up yet, or refused: try again
                log.warning("could not register with %s (%s); trying again in %.1f s",
                            redact_url(self.gateway), _reason(exc), pause)
            await asyncio.sleep(pause)
            pause = min(pause * 2, RETRY_MAX)

    async def _run(self) -> None:
        await self._register_until_done()
        while True:
            await asyncio.sleep(self.every)
            try:
                await self._call("POST", "/heartbeat", {"heartbeat_seconds": self.every})
            except GatewayError as exc:
                if exc.status != 404:
                    log.warning("heartbeat to %s failed (%s)", redact_url(self.gateway),
                                _reason(exc))
                    continue
                log.warning("the gateway no longer knows this engine: registering again")
                self.registered.clear()
                await self._register_until_done()
            except Exception as exc:  # the gateway is away: the next beat tries again
                log.warning("heartbeat to %s failed (%s)", redact_url(self.gateway),
                            _reason(exc))

    async def close(self) -> None:
        """Leave routing at once (when registered), then stop beating."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._session is None:
            return
        if self.registered.is_set():
            try:
                await asyncio.wait_for(self._call("DELETE"), LEAVE_TIMEOUT)
                log.info("left routing at %s", redact_url(self.gateway))
            except Exception as exc:  # its heartbeat stops: gateways drop it soon anyway
                log.warning("could not deregister from %s (%s)", redact_url(self.gateway),
                            _reason(exc))
        with contextlib.suppress(Exception):
            await self._session.close()


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
