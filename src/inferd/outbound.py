"""Where inferd may connect: allow-lists of hosts and networks for the URLs it calls.

inferd sends requests to URLs that API users choose: replica URLs (an admin key; the requests
carry the replica's credential) and job webhook URLs (any user key). Without a check, a key
could aim them at internal services or at the cloud metadata address (169.254.169.254) and
read the answer back. Every such URL goes through a ``HostAllowList``, twice:

- when the URL is given (``check``): a clear 400 in the OpenAI error shape;
- when inferd connects (``resolve``, used by ``GuardedResolver`` and the upstream pool): the
  host name is resolved again and every address checked right before the connection is made,
  so a name that resolved to an allowed address at creation and to an internal one later (DNS
  rebinding) is refused. The connection goes to the addresses that were checked.

Entries are CIDR networks (``10.0.0.0/8``, ``::1/128``), exact host names (``localhost``),
domain suffixes (``*.engines.internal``) or ``public`` (any globally routable address: not
private, loopback, link-local, CGNAT, multicast, unspecified or reserved). A host name that no
entry names is resolved, and every address it resolves to must be allowed. IP addresses are
normalised first, so that the forms a resolver accepts (``127.1``, ``2852039166``,
``0251.0376.0251.0376``, ``0xa9fea9fe``, ``::ffff:169.254.169.254``) are checked as the
address they mean.

A host must be written with the characters of a host name (ASCII letters, digits, ``-``, ``.``,
``_``; an internationalised name in its ``xn--`` form) or be an IPv6 address in brackets.
Anything else (``%``, which would end the host at one parser and not at another; a zone id;
non-ASCII letters, which clients encode each their own way) is refused, so that the host
checked is always the host resolved.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import re
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from inferd.errors import InvalidRequest
from inferd.redact import redact_url

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

PUBLIC = "public"

# Sent by a gateway (or worker) with every request it forwards to an http replica: the sender
# meters the request, so an inferd engine receiving it with its engine credential does not
# (``inferd.http.auth``).
FORWARDED_HEADER = "X-Inferd-Forwarded"

# Numbers a resolver reads as an IPv4 address (inet_aton): one to four parts, each decimal,
# octal (leading 0) or hexadecimal (0x).
_NUMERIC_V4 = re.compile(r"(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+)){0,3}")
_HOST = re.compile(r"[a-z0-9._-]+|\[[0-9a-f:.]+\]")
_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def parse_address(host: str) -> Address | None:
    """``host`` as the IP address it means, in any form a resolver accepts; None for a name.

    An IPv4 address inside IPv6 (``::ffff:a.b.c.d``, NAT64 ``64:ff9b::a.b.c.d``) is the IPv4
    address: that is where a connection to it goes.
    """
    text = host.strip("[]").split("%", 1)[0].rstrip(".").lower()
    ip: Address
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        if not _NUMERIC_V4.fullmatch(text):
            return None
        try:
            ip = ipaddress.IPv4Address(socket.inet_aton(text))
        except OSError:
            return None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip in _NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


def valid_host(host: str) -> bool:
    """True when ``host`` (as a URL writes it: an IPv6 address in brackets) holds only the
    characters of a host name or of an IPv6 address."""
    return _HOST.fullmatch(host.lower()) is not None


def _url_host(netloc: str) -> str:
    """The host part of a URL's ``netloc`` as written (user information and port removed)."""
    host = netloc.rpartition("@")[2]
    if host.startswith("["):
        return host.partition("]")[0] + "]"
    return host.partition(":")[0]


def is_public(ip: Address) -> bool:
    """True for an address routed on the internet (what ``public`` allows)."""
    if isinstance(ip, ipaddress.IPv6Address) and (ip.sixtofour or ip.teredo):
        return False  # they carry an IPv4 address of unknown reach
    return ip.is_global and not (ip.is_private or ip.is_loopback or ip.is_link_local
                                 or ip.is_multicast or ip.is_unspecified or ip.is_reserved
                                 or ip in _CGNAT)


class AddressRefused(OSError):
    """A connection to a host whose address the allow-list refuses (raised at connect time;
    an ``OSError`` so that HTTP clients report it as a failed connection)."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.EACCES, message)

    def __str__(self) -> str:
        return str(self.strerror)


@dataclass(frozen=True)
class Purpose:
    """Whose URLs a list checks, for its error messages: the request field, the error code
    and the setting an operator changes."""

    what: str
    param: str
    code: str
    setting: str


REPLICA = Purpose("Replica URL", "url", "replica_url_not_allowed", "replica_allowed_hosts")
WEBHOOK = Purpose("webhook_url", "webhook_url", "webhook_url_not_allowed",
                  "jobs.webhook_allowed_hosts")


class HostAllowList:
    """Checks URLs, and the addresses their hosts resolve to, against hosts and networks."""

    def __init__(self, entries: list[str], purpose: Purpose = REPLICA) -> None:
        self.purpose = purpose
        self.networks: list[Network] = []
        self.names: set[str] = set()
        self.suffixes: list[str] = []
        self.public = False
        for entry in entries:
            entry = entry.strip().lower()
            if not entry:
                continue
            if entry == PUBLIC:
                self.public = True
            elif entry.startswith("*."):
                self.suffixes.append(entry[1:])
            else:
                try:
                    self.networks.append(ipaddress.ip_network(entry, strict=False))
                except ValueError:
                    self.names.add(entry.rstrip("."))

    def allows_address(self, ip: Address) -> bool:
        if any(ip.version == net.version and ip in net for net in self.networks):
            return True
        return self.public and is_public(ip)

    def names_host(self, host: str) -> bool:
        """True when an entry names ``host`` itself (its addresses are then not checked)."""
        host = host.rstrip(".").lower()
        return host in self.names or any(host.endswith(s) for s in self.suffixes)

    async def check(self, url: str) -> None:
        """Raise ``InvalidRequest`` (400) unless ``url`` may be used."""
        what = self.purpose.what
        try:
            parts = urlsplit(url)
        except ValueError as exc:  # e.g. an unclosed IPv6 bracket
            raise self._refused(f"{what} is not a valid URL ({exc}).") from exc
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise self._refused(f"{what} '{redact_url(url)}' must be an http:// or https:// "
                                "URL with a host.")
        if parts.username or parts.password:
            hint = "; use 'api_key'" if self.purpose is REPLICA else ""
            raise self._refused(f"{what} may not carry credentials in the URL{hint}.")
        if not valid_host(_url_host(parts.netloc)):
            raise self._refused(
                f"{what} '{redact_url(url)}' has a host with characters no host name holds: "
                "use ASCII letters, digits, '-', '.' and '_' (an internationalised name in its "
                "'xn--' form), or an IPv6 address in brackets without a zone.")
        try:
            parts.port  # noqa: B018  (raises on a malformed port)
        except ValueError as exc:
            raise self._refused(f"{what} '{redact_url(url)}' has an invalid port.") from exc
        if self.names_host(parts.hostname):
            return
        try:
            await self.resolve(parts.hostname)
        except AddressRefused as exc:
            raise self._refused(str(exc)) from exc

    async def resolve(self, host: str, port: int = 0) -> list[str]:
        """The addresses to connect to for ``host``, each allowed; ``AddressRefused`` (an
        ``OSError``) when the host is not allowed or cannot be resolved."""
        if not valid_host(host if ":" not in host else f"[{host.strip('[]')}]"):
            raise AddressRefused(f"Host '{host}' is not a valid host name.")
        if self.names_host(host):
            return await _resolve(host, port)
        ip = parse_address(host)
        if ip is not None:
            addresses = [str(ip)]
        else:
            addresses = await _resolve(host, port)
        self.verify(host, addresses)
        return addresses

    def verify(self, host: str, addresses: list[str]) -> None:
        """Raise ``AddressRefused`` unless every one of ``addresses`` (of ``host``) is allowed."""
        if self.names_host(host):
            return
        parsed = [parse_address(a) for a in addresses]
        if not parsed or not all(ip is not None and self.allows_address(ip) for ip in parsed):
            raise AddressRefused(f"Host '{host.rstrip('.')}' is not in the allowed hosts and "
                                 f"networks (setting {self.purpose.setting}).")

    def _refused(self, message: str) -> InvalidRequest:
        return InvalidRequest(message, param=self.purpose.param, code=self.purpose.code)


async def _resolve(host: str, port: int) -> list[str]:
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise AddressRefused(f"Host '{host}' cannot be resolved.") from exc
    return list(dict.fromkeys(str(info[4][0]) for info in infos))
