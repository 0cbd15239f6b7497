"""The audit log: every change of the control plane, who made it, from where, before and after.

Services that change the control plane (keys, models, replicas, prompts, engines, stored
secrets) call ``AuditLog.record`` right after the change is stored, on the request that made
it; the caller is found by ``current_actor``: the request the auth middleware is serving (its
key, client address and request id, ``request_scope``), else the actor a command set
(``acting_as``: ``inferd keys``, ``inferd secrets``), else the system. Before and after are
the object's views with every secret masked (``masked``): no key, webhook secret, upstream
credential or URL credential is ever stored.

An event that could not be written (the database away for a moment) is kept in memory and
written with the next event or the next tick of ``run``, so that an event is not lost when the
change it records succeeded. Refused keys and admin routes refused to a key are not written
one by one (a flood of bad keys must not write a row each): ``refused`` counts them per
client address, code and key, and ``run`` writes one event per count and window.

Events are only appended; the maintenance sweep removes those past the retention (``prune``).
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import logging
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

from inferd.jsontypes import JsonObject, JsonValue
from inferd.redact import MASK, redact_url
from inferd.store.audit import AuditQuery, AuditStore, NewEvent, StoredEvent, Via

__all__ = [
    "MASK",
    "Actor",
    "AuditLog",
    "AuditQuery",
    "acting_as",
    "cli_actor",
    "current_actor",
    "masked",
    "request_scope",
]

log = logging.getLogger("inferd.audit")

# Names of fields whose values are secrets (compared lowercased, ``-`` read as ``_``).
SECRET_FIELDS = frozenset(
    {
        "key",
        "api_key",
        "apikey",
        "secret",
        "webhook_secret",
        "client_secret",
        "password",
        "passwd",
        "token",
        "access_token",
        "refresh_token",
        "id_token",
        "authorization",
        "proxy_authorization",
        "credential",
        "credentials",
        "private_key",
        "key_hash",
        "x_api_key",
        "cookie",
        "secret_key",
    }
)
SECRET_SUFFIXES = ("_secret", "_token", "_password", "_api_key", "_credential")
# Events kept in memory while the database refuses them; past this the oldest are dropped
# (and logged): a process never grows without bound.
MAX_PENDING = 10_000
# Distinct (action, address, code, key) counts per window of refused keys; the rest are
# counted under the address "*".
MAX_FAILURE_KEYS = 1_000


def _secret_field(name: str) -> bool:
    name = name.lower().replace("-", "_")
    return name in SECRET_FIELDS or name.endswith(SECRET_SUFFIXES)


def masked(value: object, field: str = "") -> JsonValue:
    """``value`` (a view: JSON, tuples read as lists, keys as text) with every secret replaced
    by ``MASK``: the values of fields named like a secret (``api_key``, ``webhook_secret``,
    ``Authorization``, ``*_token`` ...), every value of a ``headers`` map, and the credentials
    a URL carries (``*url`` fields). Flags (``has_api_key``) stay: they tell whether there is
    a secret, not what it is."""
    if isinstance(value, Mapping):
        headers = field.lower() == "headers"
        return {
            str(k): (
                MASK
                if (headers or _secret_field(str(k)))
                and v not in (None, "")
                and not isinstance(v, bool)
                else masked(v, str(k))
            )
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [masked(v, field) for v in value]
    if isinstance(value, str) and field.lower().endswith("url"):
        return redact_url(value)
    if value is None or isinstance(value, str | int | float):
        return value
    return str(value)  # not JSON (no view holds such a value): its text, never the object


@dataclass(frozen=True, slots=True)
class Actor:
    """Who made a change: a key (its id, name and scope; later a user or an SSO subject),
    over the API, a command (``cli``) or inferd itself (``system``)."""

    key_id: str | None = None
    name: str = ""
    scope: str | None = None
    user: str | None = None
    via: Via = "api"
    address: str | None = None
    request_id: str | None = None


SYSTEM = Actor(name="inferd", via="system")

# The ASGI scope of the request being served (set by the auth middleware): its principal,
# client address and request id name the actor.
request_scope: ContextVar[Mapping[str, Any] | None] = ContextVar(
    "inferd_audit_request", default=None
)
_acting: ContextVar[Actor | None] = ContextVar("inferd_audit_actor", default=None)


def cli_actor() -> Actor:
    """A command run on this machine: the operating system's user."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = ""
    return Actor(
        name=f"inferd command ({user})" if user else "inferd command", user=None, via="cli"
    )


@contextlib.contextmanager
def acting_as(actor: Actor) -> Iterator[None]:
    """Changes made inside are recorded as ``actor``'s (a command's)."""
    token = _acting.set(actor)
    try:
        yield
    finally:
        _acting.reset(token)


def current_actor() -> Actor:
    """The actor of the change being made now (see the module's description)."""
    acting = _acting.get()
    if acting is not None:
        return acting
    scope = request_scope.get()
    if scope is None:
        return SYSTEM
    state = scope.get("state") or {}
    principal = state.get("principal")
    client = scope.get("client")
    open_mode = bool(getattr(principal, "open_mode", False))
    return Actor(
        key_id=getattr(principal, "key_id", None),
        name="open mode (keys not required)"
        if open_mode
        else str(getattr(principal, "name", "") or ""),
        scope="open"
        if open_mode
        else "engine"
        if getattr(principal, "engine", False)
        else getattr(principal, "scope", None),
        address=client[0] if client else None,
        request_id=state.get("request_id"),
    )


class ActorView(TypedDict):
    """Who made a change, as an event shows it (``c.AuditActor``)."""

    key_id: str | None
    name: str
    scope: str | None
    user: str | None
    via: Via


class EventView(TypedDict):
    """An event as the API, the CLI and the export show it (``c.AuditEvent``)."""

    id: str
    object: Literal["audit_event"]
    created_at: float
    actor: ActorView
    action: str
    object_type: str
    object_id: str | None
    before: JsonValue
    after: JsonValue
    client_address: str | None
    request_id: str | None


class EventPage(TypedDict):
    """A page of events, newest first (``c.AuditEventList``)."""

    object: Literal["list"]
    data: list[EventView]
    has_more: bool
    first_id: str | None
    last_id: str | None


class _Refusals(TypedDict):
    """The count of one kind of refusal in the current window."""

    count: int
    first_at: float
    path: str
    last_at: float


def event_view(row: StoredEvent) -> EventView:
    """An event as the API, the CLI and the export show it."""
    return {
        "id": str(row["id"]),
        "object": "audit_event",
        "created_at": row["created_at"],
        "actor": {
            "key_id": row["actor_key_id"],
            "name": row["actor_name"],
            "scope": row["actor_scope"],
            "user": row["actor_user"],
            "via": row["via"],
        },
        "action": row["action"],
        "object_type": row["object_type"],
        "object_id": row["object_id"],
        "before": row["before"],
        "after": row["after"],
        "client_address": row["client_address"],
        "request_id": row["request_id"],
    }


class AuditLog:
    """Records events and reads them back (``page``, ``export``)."""

    def __init__(
        self, store: AuditStore, *, retention_days: float = 365.0, failure_window: float = 60.0
    ) -> None:
        self.store = store
        self.retention_days = retention_days
        self.failure_window = failure_window
        self.pending: list[NewEvent] = []
        self.failures: dict[tuple[str, str, str, str], _Refusals] = {}
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    # -- writing ---------------------------------------------------------------------------
    async def record(
        self,
        action: str,
        object_type: str,
        object_id: object | None,
        *,
        before: object = None,
        after: object = None,
        actor: Actor | None = None,
    ) -> bool:
        """Record ``action`` on the object (``object_type``, ``object_id``), its views
        ``before`` and ``after`` the change (masked here). False when it could not be
        written yet: it is kept and written with the next event or tick."""
        who = actor or current_actor()
        self._queue(
            {
                "created_at": time.time(),
                "actor_key_id": who.key_id,
                "actor_name": who.name[:200],
                "actor_scope": who.scope,
                "actor_user": who.user,
                "via": who.via,
                "action": action,
                "object_type": object_type,
                "object_id": None if object_id is None else str(object_id)[:191],
                "before": masked(before),
                "after": masked(after),
                "client_address": who.address[:64] if who.address else None,
                "request_id": who.request_id[:64] if who.request_id else None,
            }
        )
        return await self.flush()

    def _queue(self, event: NewEvent) -> None:
        self.pending.append(event)
        if len(self.pending) > MAX_PENDING:
            dropped = self.pending.pop(0)
            log.error(
                "audit event dropped (the database refused events for too long): %s",
                {
                    "action": dropped["action"],
                    "object_type": dropped["object_type"],
                    "object_id": dropped["object_id"],
                },
            )

    async def flush(self) -> bool:
        """Write the events not written yet; False when the database refused them (they
        are kept for the next try)."""
        async with self._lock:
            if not self.pending:
                return True
            batch = list(self.pending)
            try:
                await self.store.append(batch)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("could not write %d audit events; they are kept to retry", len(batch))
                return False
            del self.pending[: len(batch)]
            return True

    def refused(
        self,
        action: str,
        address: str | None,
        code: str,
        *,
        key_id: str | None = None,
        path: str = "",
    ) -> None:
        """Count a refused key (``auth.failed``) or an admin route refused to a key
        (``auth.denied``); written once per window by ``run`` (never a row per refusal)."""
        now = time.time()
        key = (action, address or "", code, key_id or "")
        entry = self.failures.get(key)
        if entry is None:
            if len(self.failures) >= MAX_FAILURE_KEYS:
                key = (action, "*", code, "")
                entry = self.failures.get(key)
            if entry is None:
                entry = self.failures[key] = {
                    "count": 0,
                    "first_at": now,
                    "path": path[:200],
                    "last_at": now,
                }
        entry["count"] += 1
        entry["last_at"] = now

    def take_failures(self) -> None:
        """Move the counts of refusals into events to write."""
        counts, self.failures = self.failures, {}
        for (action, address, code, key_id), entry in counts.items():
            after: JsonObject = {
                "code": code,
                "count": entry["count"],
                "first_at": entry["first_at"],
                "path": entry["path"],
                "last_at": entry["last_at"],
            }
            self._queue(
                {
                    "created_at": entry["last_at"],
                    "actor_key_id": key_id or None,
                    "actor_name": "",
                    "actor_scope": None,
                    "actor_user": None,
                    "via": "api",
                    "action": action,
                    "object_type": "client",
                    "object_id": address or None,
                    "before": None,
                    "after": after,
                    "request_id": None,
                    "client_address": address[:64] if address and address != "*" else None,
                }
            )

    async def tick(self) -> None:
        self.take_failures()
        await self.flush()

    async def run(self) -> None:
        """Every window: write the counts of refusals and any event not written yet."""
        while True:
            await asyncio.sleep(self.failure_window)
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # the next tick tries again
                log.exception("audit log tick failed")

    def start(self) -> None:
        self._task = asyncio.create_task(self.run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):
            await self.tick()

    # -- retention -------------------------------------------------------------------------
    async def prune(self, now: float | None = None) -> int:
        """Remove the events past the retention (none when it is 0: kept for ever)."""
        if self.retention_days <= 0:
            return 0
        return await self.store.prune((now or time.time()) - self.retention_days * 86400.0)

    # -- reading ---------------------------------------------------------------------------
    async def page(
        self, query: AuditQuery, *, after: int | None = None, limit: int = 100
    ) -> EventPage:
        rows, more = await self.store.page(query, after=after, limit=limit)
        data = [event_view(r) for r in rows]
        return {
            "object": "list",
            "data": data,
            "has_more": more,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }

    async def export(self, query: AuditQuery, *, size: int = 1000) -> AsyncIterator[EventView]:
        """Every event matching ``query``, newest first, read a page at a time."""
        after: int | None = None
        while True:
            rows, more = await self.store.page(query, after=after, limit=size)
            for row in rows:
                yield event_view(row)
            if not more or not rows:
                return
            after = int(rows[-1]["id"])
