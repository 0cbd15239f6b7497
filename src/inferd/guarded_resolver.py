"""aiohttp's connections checked against an allow-list: the resolver and the connector's
arguments. A module of its own so that aiohttp is imported only by the processes that connect
somewhere (a webhook, a remote replica), not with ``inferd.outbound``, which every process
imports."""

from __future__ import annotations

import socket
from typing import TypedDict

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from inferd.outbound import HostAllowList


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver with every answer checked against an allow-list before aiohttp
    connects to it (aiohttp connects only to the addresses its resolver returns).

    aiohttp does not ask the resolver about an IP address literal: such a URL is checked by
    ``HostAllowList.check`` (its address cannot change).
    """

    def __init__(self, allow: HostAllowList) -> None:
        self.allow = allow
        self._inner = ThreadedResolver()  # the system resolver, as ``outbound._resolve`` asks it

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        self.allow.verify(host, [r["host"] for r in results])
        return results

    async def close(self) -> None:
        await self._inner.close()


class ConnectorOptions(TypedDict, total=False):
    """Keyword arguments of ``aiohttp.TCPConnector``."""

    resolver: AbstractResolver


def connector_options(allow: HostAllowList | None) -> ConnectorOptions:
    """Keyword arguments of ``aiohttp.TCPConnector`` that check every connection."""
    return {} if allow is None else {"resolver": GuardedResolver(allow)}
