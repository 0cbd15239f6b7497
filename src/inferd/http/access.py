"""Who may call each route: the access policy, derived from the routes' declarations.

Every route declares its access level where it is defined (``@endpoint(..., access=...)``,
``inferd.http.operation``); ``POLICY`` collects them, by method and path as the route table
spells them. The auth middleware lets the ``public`` routes through without a key
(``public_paths``); the docs' Authorization page (``docs/security/authorization.md``) prints
the table (``policy_table``); ``tests/e2e/test_authz_matrix.py`` fails when any route
answers a caller otherwise than its level says.

Callers: no key, a user key, an admin key, and keys that are disabled, expired or deleted.
Every route but the public ones answers 401 to a missing or refused key (``missing_api_key``,
``invalid_api_key`` for an unknown or deleted key, ``key_disabled``, ``key_expired``). While
keys are not required (loopback, no admin key yet) every caller is the open-mode principal
(``OPEN_MODE``), set by the auth middleware.
The engines' key (``INFERD_ENGINE_API_KEY`` on a gateway) is no key of the table: it may call
the ``engine`` routes and is refused everywhere else.
"""

from __future__ import annotations

from inferd.http.operation import ENGINE_PREFIX, LEVELS, Access, Registry
from inferd.http.routes import declared

__all__ = ["ENGINE_PREFIX", "LEVELS", "POLICY", "Access", "policy_table", "public_paths"]

# Every route of the app, with its access level, in the order the app routes them.
POLICY: dict[tuple[str, str], Access] = declared().policy()


def public_paths(registry: Registry | None = None) -> tuple[frozenset[str], tuple[str, ...]]:
    """The public routes as exact paths, and as prefixes (routes with a path parameter)."""
    return (declared() if registry is None else registry).public_paths()


def policy_table(registry: Registry | None = None) -> str:
    """The policy as the docs' Markdown table: one row per level, its routes listed."""
    policy = (declared() if registry is None else registry).policy()
    rows = ["| access | who | routes |", "|---|---|---|"]
    for level, who in LEVELS.items():
        listed = ", ".join(f"`{method} {path}`" for (method, path), access in policy.items()
                           if access == level)
        rows.append(f"| `{level}` | {who} | {listed} |")
    return "\n".join(rows)
