"""Replica security: a replica URL must point inside an allow-list of hosts and networks.

The gateway sends requests (with credentials) wherever a replica URL points, so an admin key
must not be able to aim it at arbitrary internal services. Entries are CIDR networks
(``10.0.0.0/8``, ``::1/128``), exact host names (``localhost``) or domain suffixes
(``*.engines.internal``). A host name that no entry names is resolved, and every address it
resolves to must fall inside an allowed network.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

from inferd.errors import InvalidRequest

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class HostAllowList:
    """Checks replica URLs against the configured hosts and networks."""

    def __init__(self, entries: list[str]) -> None:
        self.networks: list[Network] = []
        self.names: set[str] = set()
        self.suffixes: list[str] = []
        for entry in entries:
            entry = entry.strip().lower()
            if not entry:
                continue
            if entry.startswith("*."):
                self.suffixes.append(entry[1:])
                continue
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                self.names.add(entry)

    def _ip_allowed(self, address: str) -> bool:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        return any(ip.version == net.version and ip in net for net in self.networks)

    async def check(self, url: str) -> None:
        """Raise ``InvalidRequest`` (400, param ``url``) unless ``url`` may be used."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise _refused(f"Replica URL '{url}' must be an http:// or https:// URL with a host.")
        if parts.username or parts.password:
            raise _refused("Replica URLs may not carry credentials; use 'api_key'.")
        try:
            parts.port  # noqa: B018  (raises on a malformed port)
        except ValueError as exc:
            raise _refused(f"Replica URL '{url}' has an invalid port.") from exc
        host = parts.hostname.lower()
        if host in self.names or any(host.endswith(s) for s in self.suffixes):
            return
        try:
            ipaddress.ip_address(host.split("%", 1)[0])
            addresses = [host]
        except ValueError:
            addresses = await _resolve(host)
        if not addresses or not all(self._ip_allowed(a) for a in addresses):
            raise _refused(f"Replica host '{host}' is not in the allowed hosts and networks "
                           "(setting replica_allowed_hosts).")


async def _resolve(host: str) -> list[str]:
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None,
                                                             type=socket.SOCK_STREAM)
    except OSError as exc:
        raise _refused(f"Replica host '{host}' cannot be resolved.") from exc
    return sorted({str(info[4][0]) for info in infos})


def _refused(message: str) -> InvalidRequest:
    return InvalidRequest(message, param="url", code="replica_url_not_allowed")
