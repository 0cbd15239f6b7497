"""The web UI: plain HTML, CSS and ES modules under ``static/`` (no build step).

The pages call inferd's own public API with the key the user types once (kept in the
browser's sessionStorage), or the key of a single sign-on session (``inferd.http.sso``); the
server adds nothing but the files. Charts use the vendored
uPlot under ``static/vendor/``.

Every answer carries ``SECURITY_HEADERS``: a Content-Security-Policy that allows only the UI's
own files (no inline script or style, no other origin but images a replica links to, no
framing), ``X-Frame-Options: DENY`` for browsers without CSP framing rules, and
``X-Content-Type-Options: nosniff``.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from starlette.responses import FileResponse, RedirectResponse, Response

from inferd.errors import NotFound
from inferd.http.deps import PrincipalDep, ServicesDep
from inferd.http.operation import endpoint
from inferd.http.responses import json_response
from inferd.schemas import answers_control as c

STATIC = Path(__file__).parent / "static"
# Every file the UI may serve, found once at import: a request can only name one of these,
# so no path in a URL can reach outside the folder.
FILES = {p.relative_to(STATIC).as_posix(): p for p in STATIC.rglob("*") if p.is_file()}
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; "
       "img-src 'self' data: blob: https:; connect-src 'self'; font-src 'self'; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = {"Content-Security-Policy": CSP, "X-Frame-Options": "DENY",
                    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
                    "Cache-Control": "no-cache"}

router = APIRouter(include_in_schema=False)


@endpoint(router, "GET", "/", access="public")
async def root() -> Response:
    return RedirectResponse("/ui/", headers=SECURITY_HEADERS)


@endpoint(router, "GET", "/ui", access="public")
@endpoint(router, "GET", "/ui/", access="public")
async def index() -> Response:
    return FileResponse(STATIC / "index.html", media_type=TYPES[".html"],
                        headers=SECURITY_HEADERS)


@endpoint(router, "GET", "/ui/static/{name:path}", access="public")
async def static(name: str) -> Response:
    path = FILES.get(name)
    if path is None:
        raise NotFound(f"No UI file named '{name}'.")
    return FileResponse(path, media_type=TYPES.get(path.suffix, "text/plain; charset=utf-8"),
                        headers=SECURITY_HEADERS)


@endpoint(router, "POST", "/ui/session", access="key", answer=c.Session, writes=False,
          errors=(503,))
async def session(principal: PrincipalDep, services: ServicesDep) -> Response:
    """The UI's log-in: who the typed key is (its scope decides the pages shown; ``user``:
    the key's user, ``sso``: the key of a single sign-on session). A log-in
    with a key is recorded in the audit log (``ui.login``); a refused key is counted with the
    other refused keys (``auth.failed``)."""
    scope = "open" if principal.open_mode else principal.scope
    if principal.key_id is not None:
        await services.control.audit.record("ui.login", "api_key", principal.key_id,
                                            after={"scope": scope, "name": principal.name})
    return json_response({"object": "session", "key_id": principal.key_id,
                          "name": principal.name, "scope": scope,
                          "user": principal.metadata.get("owner") if principal.user_id else None,
                          "sso": principal.metadata.get("sso") is not None},
                         headers=SECURITY_HEADERS)
