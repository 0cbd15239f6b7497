"""A request that reaches the app without a principal in its scope is refused with 401.

The app runs in open mode (loopback, no admin key): through the auth middleware every caller
is the open-mode admin. Without the middleware nothing puts a principal in the scope, and no
route, fast path included, may take the missing caller for an admin.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from inferd.app import create_app
from inferd.http.anthropic import PREFIX as ANTHROPIC_PREFIX
from inferd.http.auth import AuthMiddleware, PublicRoutes
from inferd.http.fast import NO_PRINCIPAL
from inferd.http.operation import is_scim_path
from inferd.http.routes import declared
from inferd.settings import load_settings

ASYNC = {"Prefer": "respond-async"}
CHAT = {"model": "echo", "messages": [{"role": "user", "content": "a"}]}


PUBLIC = PublicRoutes(declared())


def _public(path: str) -> bool:
    return path in PUBLIC


def keyed_routes(app: Any) -> list[tuple[str, str]]:
    """Every (method, path) the app serves outside the public routes, path parameters filled."""
    found = set()
    for entry in app.routes:
        included = getattr(entry, "effective_route_contexts", None)
        for route in included() if included is not None else [entry]:
            path = re.sub(r"\{[^}]*\}", "1", route.path)
            found |= {(method, path) for method in getattr(route, "methods", None) or ()
                      if method != "HEAD" and not _public(path)}
    return sorted(found)


@pytest.fixture
async def apps(tmp_path: Path) -> AsyncIterator[tuple[Any, Any]]:
    """The app as served (auth middleware in place), and the same app without it."""
    settings = load_settings(data_dir=tmp_path, bundled_models=False,
                             models=[{"name": "echo", "kind": "echo"}])
    app = create_app(settings)
    bare = create_app(settings)
    bare.user_middleware = [m for m in bare.user_middleware if m.cls is not AuthMiddleware]
    async with app.router.lifespan_context(app), bare.router.lifespan_context(bare):
        yield app, bare


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://test")


def assert_refused(response: httpx.Response, what: str) -> None:
    """401 in the OpenAI error shape (the Anthropic API's and SCIM's own shapes on their routes,
    as the auth middleware answers there)."""
    assert response.status_code == 401, (what, response.status_code, response.text)
    if is_scim_path(what.split(" ")[-1]):
        assert response.json() == {"schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
                                   "status": "401", "detail": NO_PRINCIPAL}, what
        return
    error = response.json()["error"]
    if what.split(" ")[-1].startswith(ANTHROPIC_PREFIX):
        assert response.json()["type"] == "error", what
        assert error["type"] == "authentication_error" and error["message"], what
        return
    assert (error["type"], error["code"]) == ("authentication_error", "missing_api_key"), what
    assert set(error) == {"message", "type", "param", "code"}, what


async def test_open_mode_is_the_middleware_s_explicit_principal(apps: tuple[Any, Any]) -> None:
    served, _ = apps
    async with client(served) as http:
        assert (await http.get("/v1/models")).status_code == 200
        assert (await http.post("/v1/chat/completions", json=CHAT)).status_code == 200
        assert (await http.get("/admin/v1/keys")).status_code == 200


async def test_every_keyed_route_refuses_a_request_without_a_principal(
        apps: tuple[Any, Any]) -> None:
    _, bare = apps
    routes = keyed_routes(bare)
    assert ("POST", "/v1/chat/completions") in routes and ("GET", "/admin/v1/keys") in routes
    async with client(bare) as http:
        for method, path in routes:
            response = await http.request(method, path, json={} if method != "GET" else None)
            assert_refused(response, f"{method} {path}")
        # the fast paths: a chat, a job, an async submission (streamed or not)
        for path, headers, body in [
                ("/v1/chat/completions", {}, CHAT),
                ("/v1/chat/completions", {}, {**CHAT, "stream": True}),
                ("/v1/jobs", {}, {"endpoint": "/v1/chat/completions", "body": CHAT}),
                ("/v1/chat/completions", ASYNC, CHAT)]:
            assert_refused(await http.post(path, json=body, headers=headers), path)
        # and the public routes still answer
        assert (await http.get("/health")).status_code == 200
