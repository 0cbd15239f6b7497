"""``Auth``: who is calling. API keys (the in-memory ``KeyRing``), key administration, the
rule for when keys are required, and the first start's bootstrap (see ``auth.bootstrap``)."""

from __future__ import annotations

import sys
from collections.abc import Callable

from inferd.auth.admin import KeyAdmin
from inferd.auth.bootstrap import AuthPolicy, bootstrap
from inferd.auth.keys import KeyRing, LoadHook
from inferd.auth.principal import ANONYMOUS, Principal
from inferd.errors import AuthenticationFailed
from inferd.settings import Settings
from inferd.store.db import Database
from inferd.store.keys import KeyStore
from inferd.store.repo import KeyValueStore


class Auth:
    """Keys, their administration and the policy of one process."""

    def __init__(self, keys: KeyRing, admin: KeyAdmin, policy: AuthPolicy, *,
                 on_failure: Callable[[], None] | None = None) -> None:
        self.keys = keys
        self.admin = admin
        self.policy = policy
        self.on_failure = on_failure or (lambda: None)

    @classmethod
    async def start(cls, settings: Settings, db: Database, *, on_load: LoadHook | None = None,
                    on_failure: Callable[[], None] | None = None) -> Auth:
        """Apply the bootstrap rule, print a newly generated admin key once, load the keys.

        ``on_load`` sees every key each time they are loaded; ``on_failure`` counts refused
        keys. ``close`` stops the key refresh.
        """
        store = KeyStore(db)
        generated = await bootstrap(settings, store, KeyValueStore(db))
        keys = KeyRing(store, refresh_seconds=settings.key_refresh_seconds, on_load=on_load)
        self = cls(keys, KeyAdmin(store, keys), AuthPolicy(settings.auth, settings.host),
                   on_failure=on_failure)
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

    async def principal(self, token: str | None) -> Principal:
        """The caller presenting ``token`` (None: no key sent); 401 when keys are required
        and it is missing or not valid."""
        if not self.enforcing:
            # Keys are off: any client may call; a known key still brings its limits.
            known = self.keys.lookup(token) if token else None
            return self.keys.authenticate(token) if known is not None and token else ANONYMOUS
        if token is None:
            self.on_failure()
            raise AuthenticationFailed(
                "You didn't provide an API key. Send it as 'Authorization: Bearer KEY'.",
                code="missing_api_key")
        try:
            return await self.keys.authenticate_fresh(token)
        except AuthenticationFailed:
            self.on_failure()
            raise

    async def owner(self, key_id: str) -> Principal:
        """The key that submitted earlier work (a job), as it is now; 401 when revoked."""
        return self.keys.owner(key_id)
