"""Single sign-on with an OpenID Connect provider (``inferd.auth.sso``,
``docs/security/sso.md``): the browser's login under ``/ui/sso/`` and the admin's group rules
under ``/admin/v1/sso/rules``.

The login's state and the session's handover travel in cookies that are encrypted, HttpOnly
(no script reads them), ``SameSite=Lax`` (sent on the provider's redirect back, a top-level
navigation, and on the UI's own requests; never on another site's), limited to the paths of
the login (``/ui/sso/``) and ``Secure`` when inferd is reached over HTTPS.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import RedirectResponse, Response

from inferd.auth.sso import Sso, SsoRules, rules_view
from inferd.errors import NotFound
from inferd.http.auth import AdminDep
from inferd.http.deps import PrincipalDep, ServicesDep, read_strict
from inferd.http.operation import endpoint
from inferd.http.responses import json_response
from inferd.http.ui import SECURITY_HEADERS
from inferd.schemas import answers_control as c

ui_router = APIRouter(prefix="/ui/sso", include_in_schema=False)
admin_router = APIRouter(prefix="/admin/v1/sso", tags=["admin"])

LOGIN_COOKIE = "inferd_sso_login"
SESSION_COOKIE = "inferd_sso_session"
COOKIE_PATH = "/ui/sso"
NO_STORE = {**SECURITY_HEADERS, "Cache-Control": "no-store"}
Param = Annotated[str | None, Query(max_length=4096)]


def _sso(services: ServicesDep) -> Sso:
    if services.sso is None:
        raise NotFound("Single sign-on is not configured (INFERD_OIDC_ISSUER).",
                       code="sso_not_configured")
    return services.sso


SsoDep = Annotated[Sso, Depends(_sso)]


def _base(request: Request) -> str:
    return str(request.base_url)


def _secure(request: Request, sso: Sso) -> bool:
    return request.url.scheme == "https" or sso.redirect_base.startswith("https://")


def _cookie(response: Response, name: str, value: str, max_age: int, secure: bool) -> None:
    response.set_cookie(name, value, max_age=max_age, path=COOKIE_PATH, httponly=True,
                        samesite="lax", secure=secure)


@endpoint(ui_router, "GET", "/config", access="public", answer=c.SsoConfig)
async def sso_config(services: ServicesDep) -> Response:
    """Whether single sign-on is configured: the UI shows "Sign in with SSO" then."""
    sso = services.sso
    return json_response({"object": "sso.config", "enabled": sso is not None,
                          "issuer": None if sso is None else sso.issuer},
                         headers=SECURITY_HEADERS)


@endpoint(ui_router, "GET", "/login", access="public", status=302, errors=(404, 503))
async def sso_login(request: Request, sso: SsoDep) -> Response:
    """Leave for the provider's login (the authorization code flow with PKCE, ``state`` and
    ``nonce``, kept in the login's cookie)."""
    login = await sso.begin(_base(request))
    response = RedirectResponse(login.url, status_code=302, headers=NO_STORE)
    _cookie(response, LOGIN_COOKIE, login.cookie, 600, _secure(request, sso))
    return response


@endpoint(ui_router, "GET", "/callback", access="public", status=302, errors=(401, 404, 503))
async def sso_callback(request: Request, sso: SsoDep, code: Param = None, state: Param = None,
                       error: Param = None) -> Response:
    """The provider's redirect back: the code exchanged, the ID token validated, the user
    signed in; the browser goes on to the UI with the session's key in a cookie it hands
    over once (``POST /ui/sso/session``). A failed login is audited and answers 401 (503
    when the provider cannot be reached)."""
    session = await sso.finish(code=code, state=state, error=error,
                               cookie=request.cookies.get(LOGIN_COOKIE))
    response = RedirectResponse("/ui/", status_code=302, headers=NO_STORE)
    response.delete_cookie(LOGIN_COOKIE, path=COOKIE_PATH)
    _cookie(response, SESSION_COOKIE, session.cookie, 120, _secure(request, sso))
    return response


@endpoint(ui_router, "POST", "/session", access="public", answer=c.SsoHandoff,
          errors=(401, 404), writes=False)
async def sso_session(request: Request, sso: SsoDep) -> Response:
    """The key of the browser's new single sign-on session, once (the cookie is cleared)."""
    handed = sso.handoff(request.cookies.get(SESSION_COOKIE))
    response = json_response({"object": "sso.session", **handed}, headers=NO_STORE)
    response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH)
    return response


@endpoint(ui_router, "POST", "/logout", access="key", answer=c.SsoLogout, errors=(404,),
          writes=False)
async def sso_logout(principal: PrincipalDep, sso: SsoDep) -> Response:
    """Sign out: the single sign-on session's key the caller holds is deleted (any other key
    is left as it is). Ending one's own session changes nothing else: an auditor signs out
    too."""
    deleted = await sso.logout(principal)
    return json_response({"object": "sso.logout", "deleted": deleted}, headers=NO_STORE)


@endpoint(admin_router, "GET", "/rules", access="audit", answer=c.SsoRules,
          errors=(404, 503))
async def get_rules(sso: SsoDep, _admin: AdminDep) -> Response:
    """The group rules applied at each single sign-on login."""
    return json_response(rules_view(await sso.rules()))


@endpoint(admin_router, "PUT", "/rules", access="admin", answer=c.SsoRules, body=SsoRules,
          errors=(404, 413, 503))
async def set_rules(request: Request, sso: SsoDep, _admin: AdminDep) -> Response:
    """Replace the group rules (audited ``sso.rules.set``); each team named must exist. They
    apply from each user's next login."""
    return json_response(await sso.set_rules(await read_strict(request, SsoRules)))
