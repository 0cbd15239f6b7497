"""API keys: generation, hashing, and ``KeyRing``, the in-memory cache that authenticates.

A key is ``sk-inferd-`` plus 32 random bytes (URL-safe base64). Only its SHA-256 hash is
stored (a fast hash is right for a high-entropy random secret: there is nothing to guess) and
a short prefix for display: the ``sk-inferd-`` mark, if any, and at most ``SHOWN_CHARS`` more
characters, so that a display prefix never reveals a key (an admin may choose a key of only
``MIN_KEY_CHARS`` characters). ``KeyRing`` holds every key's ``Principal`` by hash, so
authenticating a request costs a hash and a dict lookup, never a database read. It polls one
version value in the database every ``refresh_seconds`` and reloads when any gateway changed
a key, so a revoked key stops working everywhere within that time.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from inferd.auth.principal import Principal
from inferd.errors import AuthenticationFailed
from inferd.store.keys import KeyStore

log = logging.getLogger("inferd.auth")

KEY_PREFIX = "sk-inferd-"
SHOWN_CHARS = 4
# A key an admin chooses (``INFERD_ADMIN_KEY``) has at least this many characters.
MIN_KEY_CHARS = 24
# Unknown keys trigger at most one version check per this many seconds (so a key made on
# another gateway works within it, while invalid keys cannot hammer the database).
MISS_REFRESH_SECONDS = 1.0


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def display_prefix(key: str) -> str:
    """What lists show of a key: ``sk-inferd-AbCd`` (or ``AbCd`` for a key without the mark)."""
    mark = KEY_PREFIX if key.startswith(KEY_PREFIX) else ""
    return key[:len(mark) + SHOWN_CHARS]


def principal_from_row(row: dict[str, Any],
                       storage: tuple[int, int] = (0, 0)) -> Principal:
    """The principal of a key row; ``storage``: the default quota (bytes, objects) of keys
    without their own."""
    models = row.get("models")
    extra = {str(k): str(v) for k, v in (row.get("extra") or {}).items()}
    for field in ("owner", "team"):
        if row.get(field):
            extra[field] = str(row[field])
    return Principal(
        key_id=str(row["id"]), scope=row["scope"],
        allowed_models=None if models is None else frozenset(models),
        webhook_secret=row.get("webhook_secret"), metadata=extra, name=row.get("name") or "",
        rpm=row.get("rpm"), tpm=row.get("tpm"), ipm=row.get("ipm"), upm=row.get("upm"),
        image_budget=row.get("image_budget"), token_budget=row.get("token_budget"),
        storage_bytes=_or(row.get("storage_bytes"), storage[0]),
        storage_objects=_or(row.get("storage_objects"), storage[1]),
        budget_period=row.get("budget_period"), expires_at=row.get("expires_at"),
        limit_id=f"{row['id']}-{row['key_hash'][:16]}")


def _or(value: int | None, default: int) -> int:
    return default if value is None else int(value)


class _Entry:
    __slots__ = ("enabled", "key_hash", "principal")

    def __init__(self, key_hash: str, principal: Principal, enabled: bool) -> None:
        self.key_hash = key_hash
        self.principal = principal
        self.enabled = enabled


LoadHook = Callable[[list[Principal]], Awaitable[None]]


class KeyRing:
    """Every API key's principal by hash, kept fresh by polling a version value."""

    def __init__(self, store: KeyStore, *, refresh_seconds: float = 2.0,
                 on_load: LoadHook | None = None,
                 storage: tuple[int, int] = (0, 0),
                 announce: Callable[[], Awaitable[None]] | None = None) -> None:
        self.store = store
        self.storage = storage  # the default storage quota: (bytes, objects)
        self.refresh_seconds = refresh_seconds
        self.on_load = on_load
        self._entries: dict[str, _Entry] = {}
        self._version: str | None = None
        self._checked_at = 0.0
        self._miss_checked_at = 0.0
        self._miss_check: asyncio.Future[bool] | None = None
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self.has_admin = False
        self.count = 0
        # Tells the other processes that keys changed (Redis pub/sub), when configured.
        self.announce = announce

    async def start(self) -> None:
        await self.reload()
        self._task = asyncio.get_running_loop().create_task(self._poll())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def reload(self) -> None:
        """Load every key (the version is read first, so a change in between reloads again)."""
        version = await self.store.version()
        rows = await self.store.all()
        entries = {r["key_hash"]: _Entry(r["key_hash"], principal_from_row(r, self.storage),
                                         bool(r["enabled"]))
                   for r in rows}
        now = time.time()
        self._entries = entries
        self._version = version
        self._checked_at = time.monotonic()
        self.count = len(entries)
        self.has_admin = any(e.enabled and e.principal.is_admin and
                             (e.principal.expires_at is None or e.principal.expires_at > now)
                             for e in entries.values())
        if self.on_load is not None:
            await self.on_load([e.principal for e in entries.values() if e.enabled])

    async def refresh(self) -> bool:
        """Reload if any key changed since the last load; True when it reloaded."""
        async with self._lock:
            self._checked_at = time.monotonic()
            if await self.store.version() == self._version:
                return False
            await self.reload()
            return True

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_seconds)
            try:
                await self.refresh()
            except Exception as exc:  # the store may be down for a while; keep the cache
                log.warning("could not refresh API keys: %s", exc)

    def principals(self) -> list[Principal]:
        return [e.principal for e in self._entries.values()]

    def authenticate(self, key: str) -> Principal:
        """The key's principal; raises ``AuthenticationFailed`` (401) otherwise."""
        digest = hash_key(key)
        entry = self._entries.get(digest)
        if entry is None or not secrets.compare_digest(entry.key_hash, digest):
            raise AuthenticationFailed(
                f"Incorrect API key provided: {display_prefix(key)}... You can find your API "
                "key in your inferd admin or ask your administrator.")
        if not entry.enabled:
            raise AuthenticationFailed("This API key has been disabled.", code="key_disabled")
        principal = entry.principal
        if principal.expires_at is not None and principal.expires_at <= time.time():
            raise AuthenticationFailed("This API key has expired.", code="key_expired")
        return principal

    def owner(self, key_id: str) -> Principal:
        """The principal of the key with this id, for work it submitted earlier (a job).

        Raises ``AuthenticationFailed`` when that key was deleted, disabled or has expired, so
        queued work of a revoked key does not run.
        """
        for entry in self._entries.values():
            if str(entry.principal.key_id) != key_id:
                continue
            if not entry.enabled:
                break
            principal = entry.principal
            if principal.expires_at is not None and principal.expires_at <= time.time():
                break
            return principal
        raise AuthenticationFailed("The API key that submitted this job is no longer valid.",
                                   code="key_revoked")

    async def owner_fresh(self, key_id: str) -> Principal:
        """Like ``owner``, but a key id this process has not loaded yet (made by another
        process a moment ago, its job claimed here at once) first waits for a check for new
        keys, as ``authenticate_fresh`` does; a key it knows as revoked fails at once."""
        try:
            return self.owner(key_id)
        except AuthenticationFailed:
            if any(str(e.principal.key_id) == key_id for e in self._entries.values()):
                raise
        if self._miss_check is None:
            self._miss_check = asyncio.ensure_future(self._check_for_new_keys())
        await asyncio.shield(self._miss_check)
        return self.owner(key_id)

    def lookup(self, key: str) -> Principal | None:
        """The key's principal, or None when it is unknown (not checking enabled/expiry)."""
        entry = self._entries.get(hash_key(key))
        return None if entry is None else entry.principal

    async def authenticate_fresh(self, key: str) -> Principal:
        """Like ``authenticate``, but an unknown key first waits for a check for new keys.

        The check starts after the request arrived, so a key committed elsewhere just before
        is always found; misses share one check at most every ``MISS_REFRESH_SECONDS``, so
        unknown keys cannot hammer the database (they wait up to that long for their 401).
        """
        try:
            return self.authenticate(key)
        except AuthenticationFailed:
            if hash_key(key) in self._entries:
                raise
        if self._miss_check is None:
            self._miss_check = asyncio.ensure_future(self._check_for_new_keys())
        await asyncio.shield(self._miss_check)
        return self.authenticate(key)

    async def _check_for_new_keys(self) -> bool:
        wait = self._miss_checked_at + MISS_REFRESH_SECONDS - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        # Misses from now on wait for the next check: this one may read too early for them.
        self._miss_check = None
        self._miss_checked_at = time.monotonic()
        return await self.refresh()
