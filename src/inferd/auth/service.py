"""``Auth``: who is calling. API keys (the in-memory ``KeyRing``), key administration, the
rule for when keys are required, the first start's bootstrap (see ``auth.bootstrap``) and the
throttling of addresses that keep failing to authenticate (see ``auth.throttle``)."""

from __future__ import annotations

import dataclasses
import secrets
import sys
from collections.abc import Awaitable, Callable

from inferd.audit import AuditLog
from inferd.auth.admin import KeyAdmin
from inferd.auth.bootstrap import AuthPolicy, bootstrap, engine_keyed
from inferd.auth.keys import KeyRing, LoadHook
from inferd.auth.principal import ENGINE, OPEN_MODE, Principal
from inferd.auth.scim import ScimService
from inferd.auth.teams import TeamAdmin
from inferd.auth.throttle import AuthThrottle
from inferd.errors import AuthenticationFailed, RateLimited
from inferd.settings import AccessSettings, ClusterSettings
from inferd.store.db import Database
from inferd.store.keys import KeyStore
from inferd.store.repo import KeyValueStore
from inferd.store.scim import ScimStore
from inferd.store.teams import TeamStore

# Unmetered copies of principals kept (``Auth.unmetered``): the keys that made forwarded or
# probe requests lately; the oldest made is dropped past this many.
UNMETERED_KEPT = 4096


class Auth:
    """Keys, their administration and the policy of one process."""

    def __init__(self, keys: KeyRing, admin: KeyAdmin, policy: AuthPolicy, *,
                 teams: TeamAdmin | None = None, throttle: AuthThrottle | None = None,
                 on_failure: Callable[[], None] | None = None,
                 on_throttled: Callable[[], None] | None = None,
                 open_mode: Principal, forwarding_key: str = "",
                 engine_key: bytes = b"", audit: AuditLog | None = None,
                 scim: ScimService | None = None) -> None:
        self.keys = keys
        self.admin = admin
        # Teams, users and membership (their changes reload the affected keys here).
        self.teams = teams or TeamAdmin(TeamStore(admin.store.db), keys)
        # SCIM provisioning of users and teams (through ``teams``: audited, keys reloaded)
        self.scim = scim or ScimService(self.teams, ScimStore(self.teams.store.db))
        self.policy = policy
        self.throttle = throttle or AuthThrottle(0, 1.0)
        self.on_failure = on_failure or (lambda: None)
        self.on_throttled = on_throttled or (lambda: None)
        # The credential gateways call this engine with (``inferd engine`` only, else "").
        self.forwarding_key = forwarding_key
        # The engines' key on a process of the cluster's database (not on an engine): the
        # ``ENGINE`` principal, which may only register engines ("" = none).
        self.engine_key = engine_key
        # key id -> (the principal it was made from, its unmetered copy): made again when the
        # key's principal is (a reload of the keys builds new ones, with their new limits)
        self._unmetered: dict[str | None, tuple[Principal, Principal]] = {}
        # The caller while keys are not required: ``OPEN_MODE``, with the default storage quota.
        self.open_mode = open_mode
        # Counts refused keys per client address (``AuditLog.refused``), when given.
        self.audit = audit

    @classmethod
    async def start(cls, settings: AccessSettings, db: Database, *, cluster: ClusterSettings,
                    host: str, on_load: LoadHook | None = None,
                    on_failure: Callable[[], None] | None = None,
                    on_throttled: Callable[[], None] | None = None,
                    announce: Callable[[str], Awaitable[None]] | None = None,
                    audit: AuditLog | None = None) -> Auth:
        """Apply the bootstrap rule, print a newly generated admin key once, load the keys.

        ``on_load`` sees each key when it is loaded; ``on_failure`` counts refused
        keys and ``on_throttled`` the requests of throttled addresses. ``close`` stops the key
        refresh; ``announce`` tells the other processes that keys changed; ``audit`` records
        key changes and counts refused keys.
        """
        store = KeyStore(db)
        generated = await bootstrap(settings, cluster, host, store, KeyValueStore(db))
        storage = (settings.storage_quota_bytes, settings.storage_quota_objects)
        keys = KeyRing(store, refresh_seconds=settings.key_refresh_seconds, on_load=on_load,
                       storage=storage, cache_size=settings.key_cache_size,
                       announce=announce)
        throttle = AuthThrottle(settings.auth_failure_limit,
                                settings.auth_failure_window_seconds)
        engine = cluster.role == "engine"
        self = cls(keys, KeyAdmin(store, keys, storage=storage, audit=audit),
                   AuthPolicy(settings.auth, host, keyed=engine_keyed(cluster)),
                   teams=TeamAdmin(TeamStore(db), keys, audit=audit), throttle=throttle,
                   on_failure=on_failure, on_throttled=on_throttled,
                   open_mode=dataclasses.replace(OPEN_MODE, storage_bytes=storage[0],
                                                 storage_objects=storage[1]),
                   forwarding_key=cluster.engine_api_key if engine else "",
                   engine_key=b"" if engine else cluster.engine_api_key.encode(),
                   audit=audit)
        await keys.start()
        if generated:
            print("inferd: generated the first admin API key (shown only this once):\n"
                  f"  {generated}", file=sys.stderr, flush=True)
        return self

    async def close(self) -> None:
        await self.keys.close()

    @property
    def enforcing(self) -> bool:
        """Whether requests must carry a valid key right now (see ``inferd.auth.bootstrap``)."""
        return self.policy.enforcing(self.keys.has_admin)

    async def principal(self, token: str | None, address: str | None = None,
                        path: str = "") -> Principal:
        """The caller presenting ``token`` (None: no key sent) from the client ``address``;
        401 when keys are required and it is missing or not valid, 429 while ``address`` is
        throttled for failing too often. The engines' key is the ``ENGINE`` principal."""
        if self.engine_key and token and secrets.compare_digest(token.encode(),
                                                                self.engine_key):
            return ENGINE
        if not self.enforcing:
            # Keys are off: any client may call; a known key still brings its limits.
            if token and await self.keys.find(token) is not None:
                return await self.keys.authenticate_fresh(token)
            return self.open_mode

        async def authenticate() -> Principal:
            if token is None:
                raise AuthenticationFailed(
                    "You didn't provide an API key. Send it as 'Authorization: Bearer KEY'.",
                    code="missing_api_key")
            return await self.keys.authenticate_fresh(token)

        return await self._guarded(address, path, "invalid_api_key", authenticate)

    async def external(self, token: str, address: str | None, path: str,
                       resolve: Callable[[str], Awaitable[Principal]]) -> Principal:
        """The caller presenting a token another party issued (the OpenID provider's access
        token, ``inferd.auth.sso``), which ``resolve`` validates: refused, counted, throttled
        and audited like a key (while keys are not required, a refused token is open mode,
        as an unknown key is)."""
        if not self.enforcing:
            try:
                return await resolve(token)
            except AuthenticationFailed:
                return self.open_mode
        return await self._guarded(address, path, "invalid_token", lambda: resolve(token))

    async def _guarded(self, address: str | None, path: str, code: str,
                       attempt: Callable[[], Awaitable[Principal]]) -> Principal:
        """``attempt`` to authenticate, unless ``address`` is throttled; a refusal is
        counted, held against the address, and audited (``code`` when it has none)."""
        try:
            self.throttle.check(address)
        except RateLimited:
            self.on_throttled()
            raise
        try:
            return await attempt()
        except AuthenticationFailed as exc:
            self.on_failure()
            self.throttle.failed(address)
            if self.audit is not None:
                self.audit.refused("auth.failed", address, exc.code or code, path=path)
            raise

    def forwarded(self, principal: Principal, token: str | None) -> Principal:
        """The caller of a request a gateway forwarded (it carries ``FORWARDED_HEADER``):
        with this engine's credential it is not metered here, as the gateway that received it
        records its usage; any other key is metered as usual (the header alone proves
        nothing)."""
        if not (self.forwarding_key and token
                and secrets.compare_digest(token.encode(), self.forwarding_key.encode())):
            return principal
        return self.unmetered(principal)

    def unmetered(self, principal: Principal) -> Principal:
        """``principal`` with ``metered=False`` (one per key, kept for the last
        ``UNMETERED_KEPT`` keys): its requests leave no usage record here."""
        made = self._unmetered.get(principal.key_id)
        if made is None or made[0] is not principal:
            if made is None and len(self._unmetered) >= UNMETERED_KEPT:
                del self._unmetered[next(iter(self._unmetered))]  # bounded: the oldest goes
            made = self._unmetered[principal.key_id] = (
                principal, dataclasses.replace(principal, metered=False))
        return made[1]

    async def owner(self, key_id: str) -> Principal:
        """The key that submitted earlier work (a job), as it is now; 401 when revoked."""
        return await self.keys.owner_fresh(key_id)
