"""API-key authentication as a small pure-ASGI middleware.

For every HTTP request outside the public routes (``inferd.http.access``) it reads the key
(``Authorization: Bearer`` or ``X-API-Key``), resolves it through the in-memory ``KeyRing`` (no
database read) and puts the ``Principal`` in ``scope["state"]["principal"]``, where
``http.deps.get_principal`` finds it. With single sign-on configured, a bearer that is a JSON
Web Token is the OpenID provider's access token instead, and the principal its user's
(``inferd.auth.sso``). While keys are not enforced (see
``inferd.auth.bootstrap``) a request without a known key is the open-mode admin
(``OPEN_MODE``, set here on purpose; a route finding no principal answers 401); a known key
still applies, with its limits. Paths under ``ADMIN_PREFIXES`` need an admin key (403
otherwise); other admin routes use ``AdminDep``. An auditor key reaches only the operations its
level allows (``check_auditor``: the ``audit`` routes and the reads of the key routes). Admin
routes refused to a key, and refused keys, are counted in the audit log
(``AuditLog.refused``); the request's scope names the actor of the changes it makes
(``inferd.audit.request_scope``). The engines' key (the ``ENGINE`` principal)
gets 403 everywhere but the engine registration routes (``EngineDep``).
A client address that keeps failing to authenticate gets 429 for a while (``auth.throttle``).

It also makes the request id (set by ``RequestGuard``) the context of every log line.
"""

from __future__ import annotations

import contextlib
from typing import Annotated

import orjson
from fastapi import Depends
from starlette.types import ASGIApp, Receive, Scope, Send

from inferd.audit import request_scope
from inferd.auth.oidc import looks_like_jwt
from inferd.auth.principal import Principal
from inferd.auth.scim import MEDIA_TYPE as SCIM_MEDIA_TYPE
from inferd.auth.scim import error_body as scim_error_body
from inferd.auth.scim import scim_error
from inferd.auth.service import Auth
from inferd.auth.sso import Sso
from inferd.errors import (
    AuthenticationFailed,
    InferdError,
    PermissionDenied,
    RateLimited,
    envelope,
)
from inferd.http.anthropic import PREFIX as ANTHROPIC_PREFIX
from inferd.http.anthropic import error_body as anthropic_error_body
from inferd.http.deps import get_principal
from inferd.http.fast import NO_PRINCIPAL
from inferd.http.operation import (
    ENGINE_PREFIX,
    REGISTRY,
    SCIM_PREFIX,
    Operation,
    Registry,
    is_scim_path,
)
from inferd.logs import request_id_var
from inferd.outbound import FORWARDED_HEADER

# Paths browsers ask for that no route serves: a 404 for everyone, never a 401.
BROWSER_PATHS = frozenset({"/favicon.ico", "/docs/oauth2-redirect"})
# Public routes that settings may put behind a key (``metrics_require_key``,
# ``ready_require_key``).
KEYED_PROBES = frozenset({"/metrics", "/ready"})
ADMIN_PREFIXES: tuple[str, ...] = ("/admin/", "/tables", "/generate_api_key",
                                   "/delete_api_key")


def _bearer(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            text: str = value.decode("latin-1")
            scheme, _, token = text.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return text.strip() or None
        if name == b"x-api-key":
            key: str = value.decode("latin-1").strip()
            return key or None
    return None


_FORWARDED = FORWARDED_HEADER.lower().encode()


def _forwarded(scope: Scope) -> bool:
    return any(name == _FORWARDED for name, _ in scope["headers"])


# Sent by the UI's Test button on the Models page: an admin's probe of a model is not
# traffic, so it leaves no usage record (charts and usage count what callers sent).
PROBE_HEADER = "X-Inferd-Probe"
_PROBE = PROBE_HEADER.lower().encode()


def _probe(scope: Scope) -> bool:
    return any(name == _PROBE for name, _ in scope["headers"])


class PublicRoutes:
    """The routes ``registry`` declares ``public`` (no key needed), and the paths browsers ask
    for. The middlewares below are built when the app serves its first request, every route
    declared by then."""

    def __init__(self, registry: Registry) -> None:
        exact, self.prefixes = registry.public_paths()
        self.exact = exact | BROWSER_PATHS

    def __contains__(self, path: str) -> bool:
        return path in self.exact or path.startswith(self.prefixes)


class AuthMiddleware:
    """Resolves the caller's key into a ``Principal`` for every HTTP request."""

    def __init__(self, app: ASGIApp, registry: Registry = REGISTRY) -> None:
        self.app = app
        self.public = PublicRoutes(registry)
        self.registry = registry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        request_scope.set(scope)
        request_id_var.set(state.get("request_id"))
        path: str = scope["path"]
        if path in self.public:
            if path in KEYED_PROBES:
                try:
                    await self._probe(scope, state, path)
                except InferdError as exc:
                    await _refuse(send, exc, path)
                    return
            await self.app(scope, receive, send)
            return
        try:
            state["principal"] = await self._principal(scope)
        except InferdError as exc:
            await _refuse(send, exc, path)
            return
        await self.app(scope, receive, send)

    async def _probe(self, scope: Scope, state: dict[str, object], path: str) -> None:
        """``/metrics`` needs a key when ``metrics_require_key`` is on; ``/ready`` reads one
        when ``ready_require_key`` is on (a missing or refused key is no error there: the
        answer leaves the models out). Probes without a key are not counted as failures."""
        services = scope["app"].state.services
        settings = services.settings.http
        if path == "/metrics" and settings.metrics_require_key:
            state["principal"] = await self._principal(scope)
        elif path == "/ready" and settings.ready_require_key and (
                _bearer(scope) is not None or not services.auth.enforcing):
            with contextlib.suppress(InferdError):
                state["principal"] = await self._principal(scope)

    async def _principal(self, scope: Scope) -> Principal:
        auth: Auth = scope["app"].state.services.auth
        client = scope.get("client")
        token = _bearer(scope)
        sso: Sso | None = scope["app"].state.services.sso
        if sso is not None and token is not None and looks_like_jwt(token):
            # the OpenID provider's access token (single sign-on): its user's principal
            principal = await auth.external(token, client[0] if client else None,
                                            scope["path"], sso.principal)
        else:
            principal = await auth.principal(token, client[0] if client else None,
                                             scope["path"])
        if auth.forwarding_key and _forwarded(scope):
            principal = auth.forwarded(principal, token)
        if (principal.is_admin or principal.open_mode) and principal.metered and _probe(scope):
            principal = auth.unmetered(principal)
        if principal.engine and not scope["path"].startswith(ENGINE_PREFIX):
            raise PermissionDenied(
                "This is the engines' key (INFERD_ENGINE_API_KEY): it may only register "
                f"engines ({ENGINE_PREFIX}...). Use an API key.", code="engine_key_not_allowed")
        try:
            check_scim(principal, scope["path"])
            if principal.is_auditor:
                check_auditor(self.registry.find(scope["method"], scope["path"]))
            elif scope["path"].startswith(ADMIN_PREFIXES):
                check_admin(principal)
        except PermissionDenied as exc:
            if auth.audit is not None:
                auth.audit.refused("auth.denied", client[0] if client else None,
                                   exc.code or "", key_id=principal.key_id,
                                   path=scope["path"])
            raise
        return principal


class RequirePrincipal:
    """The innermost check, around the routes: a request outside the public routes that
    reaches them without a principal in its scope (it did not pass ``AuthMiddleware``) is
    refused with 401 in the OpenAI error shape. A missing caller is never an admin: open mode
    is the ``OPEN_MODE`` principal, which ``AuthMiddleware`` sets on purpose. The fast paths run
    inside this check too (``HotPathApp`` wraps them in the app's middleware) and also refuse
    such a request themselves (``http.fast.principal_of``)."""

    def __init__(self, app: ASGIApp, registry: Registry = REGISTRY) -> None:
        self.app = app
        self.public = PublicRoutes(registry)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and "principal" not in (scope.get("state") or {}):
            path: str = scope["path"]
            if path not in self.public:
                await _refuse(send, AuthenticationFailed(NO_PRINCIPAL, code="missing_api_key"),
                              path)
                return
        await self.app(scope, receive, send)


async def _refuse(send: Send, exc: InferdError, path: str) -> None:
    media = b"application/json"
    if path.startswith(ANTHROPIC_PREFIX):  # Anthropic's clients expect Anthropic's shape
        body = anthropic_error_body(exc.status, exc.message)
    elif is_scim_path(path):  # and SCIM clients SCIM's
        body, media = orjson.dumps(scim_error_body(scim_error(exc))), SCIM_MEDIA_TYPE.encode()
    else:
        body = orjson.dumps(envelope(exc))
    headers = [(b"content-type", media),
               (b"content-length", str(len(body)).encode())]
    if exc.status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="inferd"'))
    if isinstance(exc, RateLimited):
        headers.append((b"retry-after", exc.retry_after_header.encode()))
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def check_admin(principal: Principal) -> None:
    """403 unless ``principal`` holds an admin key."""
    if not principal.is_admin:
        raise PermissionDenied("This endpoint needs an admin API key.",
                               code="admin_scope_required")


def check_scim(principal: Principal, path: str) -> None:
    """403 for a ``scim`` key outside the SCIM routes, and on them for a key that is neither
    a ``scim`` nor an admin key."""
    scim = is_scim_path(path)
    if principal.is_scim and not scim:
        raise PermissionDenied(f"This is a SCIM provisioning key: it may only call the SCIM "
                               f"routes ({SCIM_PREFIX}/...).", code="scim_key_not_allowed")
    if scim and not (principal.is_scim or principal.is_admin):
        raise PermissionDenied("The SCIM routes need a key of the scim scope (or an admin "
                               "key).", code="scim_scope_required")


def check_auditor(operation: Operation | None) -> None:
    """403 unless an auditor key may call ``operation``: the ``audit`` routes, the public
    ones, and the reads of the key routes (an unknown route is the app's 404 or 405)."""
    if operation is None or operation.access in ("public", "audit"):
        return
    if operation.access == "admin":
        raise PermissionDenied("This endpoint changes the control plane: it needs an admin API "
                               "key (an auditor key reads only).", code="admin_scope_required")
    if operation.access == "engine":
        raise PermissionDenied("This endpoint needs the engines' key (INFERD_ENGINE_API_KEY) "
                               "or an admin API key.", code="engine_scope_required")
    if operation.changes:
        raise PermissionDenied("An auditor key reads only: it may not call this endpoint.",
                               code="auditor_read_only")


def require_admin(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
    """A route dependency: 403 unless the caller holds an admin key, or an auditor key on the
    ``audit`` routes (the auth middleware refuses it every other admin route:
    ``check_auditor``)."""
    if not principal.is_auditor:
        check_admin(principal)
    return principal


AdminDep = Annotated[Principal, Depends(require_admin)]


def require_engine(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
    """A route dependency: 403 unless the caller holds the engines' key or an admin key."""
    if not (principal.engine or principal.is_admin):
        raise PermissionDenied("This endpoint needs the engines' key (INFERD_ENGINE_API_KEY) "
                               "or an admin API key.", code="engine_scope_required")
    return principal


EngineDep = Annotated[Principal, Depends(require_engine)]
