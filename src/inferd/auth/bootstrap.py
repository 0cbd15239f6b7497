"""When keys are required, and the first admin key.

The rule (``INFERD_AUTH``):

- ``off``: no keys; every caller is the open-mode admin (``OPEN_MODE``). Refused unless
  bound to loopback.
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
from inferd.auth.principal import Scope
from inferd.settings import AccessSettings, ClusterSettings
from inferd.store.keys import KeyStore
from inferd.store.repo import KeyValueStore

ENV_KEY_NAME = "INFERD_ADMIN_KEY"
# An engine's own key (``INFERD_ENGINE_API_KEY``), stored with the user scope: what gateways
# send it, so it is what its replicas' credential holds, never the admin key.
ENGINE_KEY_NAME = "INFERD_ENGINE_API_KEY"
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

    def __init__(self, mode: str, host: str, *, keyed: bool = False) -> None:
        self.mode = mode
        self.loopback = is_loopback(host)
        # An engine with a key of its own requires it, with or without an admin key.
        self.keyed = keyed

    def enforcing(self, has_admin: bool) -> bool:
        if self.mode == "off":
            return False
        if self.mode == "on" or not self.loopback or self.keyed:
            return True
        return has_admin


def engine_keyed(cluster: ClusterSettings) -> bool:
    """An ``inferd engine`` with its own key: it requires that key (the one gateways send),
    and needs no admin key."""
    return cluster.role == "engine" and bool(cluster.engine_api_key)


# Words of the values that documentation, examples and templates put where a secret goes.
PLACEHOLDER_WORDS = ("change", "example", "placeholder", "replace", "secret", "sample",
                     "dummy", "default", "insecure", "password", "xxxx", "todo")
# Fewer distinct characters than this is no random key ("aaaa...", "0123401234...").
MIN_DISTINCT_CHARS = 10


def placeholder_reason(key: str) -> str | None:
    """Why ``key`` looks like a placeholder rather than a generated secret, or None."""
    if len(key) < MIN_KEY_CHARS:
        return f"it has fewer than {MIN_KEY_CHARS} characters"
    lowered = key.lower()
    for word in PLACEHOLDER_WORDS:
        if word in lowered:
            return f"it contains '{word}', as placeholders and examples do"
    if len(set(key)) < MIN_DISTINCT_CHARS:
        return f"it has fewer than {MIN_DISTINCT_CHARS} distinct characters"
    return None


def unsafe_cluster_settings(cluster: ClusterSettings, access: AccessSettings, *, host: str,
                            secret_key: str) -> None:
    """Refuse what no cluster should run with (``StartupRefused`` saying what to set).

    Applies to ``gateway``, ``worker`` and ``engine`` bound to an address other hosts can
    reach, unless ``INFERD_ENV=development``: an admin key or engine key that looks like a
    placeholder (short, an example's words, too few distinct characters), an engine that would
    hand gateways the admin key, and no ``INFERD_SECRET_KEY`` (replica credentials and webhook
    secrets would be stored in plaintext)."""
    if cluster.role == "serve" or cluster.env == "development" or is_loopback(host):
        return
    advice = ("Generate one with `python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
              " (or set INFERD_ENV=development on a machine of your own).")
    for name, value in (("INFERD_ADMIN_KEY", access.admin_key),
                        ("INFERD_ENGINE_API_KEY", cluster.engine_api_key)):
        if value and (reason := placeholder_reason(value)) is not None:
            raise StartupRefused(f"{name} looks like a placeholder: {reason}. {advice}")
    if cluster.role == "engine" and cluster.gateway_url and cluster.engine_api_key:
        return  # it stores no secret: only its own key, hashed, in a database of its own
    if cluster.role == "engine":
        if not cluster.engine_api_key:
            raise StartupRefused(
                "inferd engine needs INFERD_ENGINE_API_KEY: the key gateways send to it (stored "
                f"as its replicas' credential; never the admin key). {advice}")
        if access.admin_key and secrets.compare_digest(cluster.engine_api_key.encode(),
                                                       access.admin_key.encode()):
            raise StartupRefused("INFERD_ENGINE_API_KEY must not be the admin key: it is "
                                 f"stored as a replica credential. {advice}")
    if not secret_key:
        raise StartupRefused(
            f"inferd {cluster.role} needs INFERD_SECRET_KEY (a Fernet key: `python -c 'from "
            "cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`) to "
            "encrypt the replica credentials and webhook secrets it stores (or set "
            "INFERD_ENV=development on a machine of your own).")


async def _install_env_key(admin: KeyAdmin, store: KeyStore, key: str,
                           name: str = ENV_KEY_NAME, scope: Scope = "admin") -> None:
    if len(key) < MIN_KEY_CHARS:
        raise StartupRefused(f"{name} must have at least {MIN_KEY_CHARS} characters.")
    row = await store.find_by_name(name)
    if row is None:
        await admin.create(KeySpec(name=name, scope=scope), key=key)
    elif (not secrets.compare_digest(row["key_hash"], hash_key(key)) or not row["enabled"]
          or row["scope"] != scope):
        await store.update(row["id"], {"key_hash": hash_key(key), "prefix": display_prefix(key),
                                       "enabled": True, "scope": scope, "expires_at": None})


async def bootstrap(access: AccessSettings, cluster: ClusterSettings, host: str,
                    store: KeyStore, facts: KeyValueStore) -> str | None:
    """Apply the rule above before serving; returns a newly generated admin key to print."""
    policy = AuthPolicy(access.auth, host)
    if access.auth == "off" and not policy.loopback:
        raise StartupRefused(
            f"INFERD_AUTH=off is only allowed on a loopback address, not {host}.")
    if access.admin_key and cluster.engine_api_key and secrets.compare_digest(
            access.admin_key.encode(), cluster.engine_api_key.encode()):
        raise StartupRefused("INFERD_ENGINE_API_KEY must not be the admin key: engines hold "
                             "it, gateways store it as a replica credential and accept it only "
                             "to register engines.")
    admin = KeyAdmin(store)
    if access.admin_key:
        await _install_env_key(admin, store, access.admin_key)
    if cluster.role == "engine" and cluster.engine_api_key:
        await _install_env_key(admin, store, cluster.engine_api_key, name=ENGINE_KEY_NAME,
                               scope="user")
    if await store.count_admins() > 0 or access.auth == "off" or engine_keyed(cluster):
        return None
    if access.auth == "on":
        # Whoever stores the fact first generates the key (several gateways may start at once).
        stamp = f"{time.time()}:{secrets.token_hex(8)}"
        if await facts.setdefault(GENERATED_FACT, stamp) != stamp:
            return None
        created = await admin.create(KeySpec(name="bootstrap admin", scope="admin"))
        return str(created["key"])
    if not policy.loopback:
        raise StartupRefused(
            f"inferd is bound to {host}, which is not a loopback address, and has no "
            "admin key. Set INFERD_ADMIN_KEY, create one with `inferd keys create --scope "
            "admin`, or set INFERD_AUTH=on to generate one on this first start.")
    return None
