"""When keys are required, and the first admin key.

The rule (``INFERD_AUTH``):

- ``off``: no keys; every caller is the anonymous admin. Refused unless bound to loopback.
- ``auto`` (default): on a loopback address, keys are off until an admin key exists (from
  ``INFERD_ADMIN_KEY``, the API or ``inferd keys create --scope admin``), then required. On
  any other address keys are required, and inferd refuses to start without an admin key.
- ``on``: keys are required. Without ``INFERD_ADMIN_KEY`` and without any admin key, the
  first start generates one and prints it once (a ``kv`` fact records that it did, so it is
  never generated or printed again).

``INFERD_ADMIN_KEY`` is stored (hashed) as the admin key named ``INFERD_ADMIN_KEY``; changing
the variable replaces that key.
"""

from __future__ import annotations

import ipaddress
import secrets
import time

from inferd.auth.admin import KeyAdmin, KeySpec
from inferd.auth.keys import MIN_KEY_CHARS, display_prefix, hash_key
from inferd.settings import Settings
from inferd.store.keys import KeyStore
from inferd.store.repo import KeyValueStore

ENV_KEY_NAME = "INFERD_ADMIN_KEY"
GENERATED_FACT = "auth.admin_key_generated"


class StartupRefused(RuntimeError):
    """The settings do not allow a safe start (message says what to set)."""


def is_loopback(host: str) -> bool:
    if host in {"localhost", "localhost.localdomain"}:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class AuthPolicy:
    """Whether this process requires a key on the current request."""

    def __init__(self, mode: str, host: str) -> None:
        self.mode = mode
        self.loopback = is_loopback(host)

    def enforcing(self, has_admin: bool) -> bool:
        if self.mode == "off":
            return False
        if self.mode == "on" or not self.loopback:
            return True
        return has_admin


async def _install_env_key(admin: KeyAdmin, store: KeyStore, key: str) -> None:
    if len(key) < MIN_KEY_CHARS:
        raise StartupRefused(f"INFERD_ADMIN_KEY must have at least {MIN_KEY_CHARS} characters.")
    row = await store.find_by_name(ENV_KEY_NAME)
    if row is None:
        await admin.create(KeySpec(name=ENV_KEY_NAME, scope="admin"), key=key)
    elif (not secrets.compare_digest(row["key_hash"], hash_key(key)) or not row["enabled"]
          or row["scope"] != "admin"):
        await store.update(row["id"], {"key_hash": hash_key(key), "prefix": display_prefix(key),
                                       "enabled": True, "scope": "admin", "expires_at": None})


async def bootstrap(settings: Settings, store: KeyStore, facts: KeyValueStore) -> str | None:
    """Apply the rule above before serving; returns a newly generated admin key to print."""
    policy = AuthPolicy(settings.auth, settings.host)
    if settings.auth == "off" and not policy.loopback:
        raise StartupRefused(
            f"INFERD_AUTH=off is only allowed on a loopback address, not {settings.host}.")
    admin = KeyAdmin(store)
    if settings.admin_key:
        await _install_env_key(admin, store, settings.admin_key)
    if await store.count_admins() > 0 or settings.auth == "off":
        return None
    if settings.auth == "on":
        # Whoever stores the fact first generates the key (several gateways may start at once).
        stamp = f"{time.time()}:{secrets.token_hex(8)}"
        if await facts.setdefault(GENERATED_FACT, stamp) != stamp:
            return None
        created = await admin.create(KeySpec(name="bootstrap admin", scope="admin"))
        return str(created["key"])
    if not policy.loopback:
        raise StartupRefused(
            f"inferd is bound to {settings.host}, which is not a loopback address, and has no "
            "admin key. Set INFERD_ADMIN_KEY, create one with `inferd keys create --scope "
            "admin`, or set INFERD_AUTH=on to generate one on this first start.")
    return None
