"""``AuthMiddleware`` with a real ``Auth`` (keys in SQLite): who gets in, and the refusals."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI

from inferd.auth.admin import KeySpec
from inferd.auth.service import Auth
from inferd.http.auth import AuthMiddleware, _bearer
from inferd.http.deps import PrincipalDep
from inferd.http.operation import Registry, endpoint
from inferd.settings import load_settings
from inferd.store.db import Database

ADMIN_KEY = "sk-test-admin-0123456789abcdef"


def app_for(auth: Auth) -> FastAPI:
    app = FastAPI()
    app.state.services = SimpleNamespace(auth=auth, sso=None)
    registry, router = Registry(), APIRouter()

    @endpoint(router, "GET", "/health", access="public", registry=registry)
    async def health() -> dict[str, bool]:
        return {"ok": True}

    @endpoint(router, "GET", "/v1/me", access="key", registry=registry)
    async def me(principal: PrincipalDep) -> dict[str, Any]:
        return {"key_id": principal.key_id, "scope": principal.scope,
                "open_mode": principal.open_mode}

    @endpoint(router, "GET", "/v1/metered", access="key", registry=registry)
    async def metered(principal: PrincipalDep) -> dict[str, Any]:
        return {"key_id": principal.key_id, "metered": principal.metered}

    @endpoint(router, "GET", "/admin/v1/thing", access="admin", registry=registry)
    async def admin_thing() -> dict[str, bool]:
        return {"admin": True}

    app.include_router(router)
    app.add_middleware(AuthMiddleware, registry=registry)  # its public routes need no key
    return app


@pytest.fixture
async def keyed(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Auth, list[int]]]:
    """Keys required (``auth: on`` with an admin key); ``failures`` counts refused keys."""
    settings = load_settings(data_dir=tmp_path, bundled_models=False, auth="on",
                             admin_key=ADMIN_KEY)
    db = Database(settings.storage.resolved_database_url())
    await db.migrate()
    failures: list[int] = []
    auth = await Auth.start(settings.access, db, cluster=settings.cluster,
                            host=settings.http.host, on_failure=lambda: failures.append(1))
    transport = httpx.ASGITransport(app=app_for(auth))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        yield client, auth, failures
    await auth.close()
    await db.close()


async def test_public_paths_need_no_key(keyed: Any) -> None:
    client, _, failures = keyed
    assert (await client.get("/health")).json() == {"ok": True}
    assert failures == []


async def test_a_missing_or_wrong_key_is_a_401_in_the_openai_shape(keyed: Any) -> None:
    client, _, failures = keyed
    missing = await client.get("/v1/me")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == 'Bearer realm="inferd"'
    assert missing.json()["error"]["code"] == "missing_api_key"
    assert missing.json()["error"]["type"] == "authentication_error"
    wrong = await client.get("/v1/me", headers={"Authorization": "Bearer sk-nope-0000000000"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
    assert len(failures) == 2


async def test_keys_by_bearer_or_x_api_key_and_the_admin_prefixes(keyed: Any) -> None:
    client, auth, _ = keyed
    user = await auth.admin.create(KeySpec(name="u"))
    await auth.keys.reload()
    by_header = await client.get("/v1/me", headers={"X-API-Key": user["key"]})
    assert by_header.json() == {"key_id": str(user["id"]), "scope": "user",
                                "open_mode": False}
    refused = await client.get("/admin/v1/thing",
                               headers={"Authorization": f"Bearer {user['key']}"})
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "admin_scope_required"
    admin = await client.get("/admin/v1/thing", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert admin.json() == {"admin": True}


async def test_without_enforcement_callers_are_the_open_mode_admin(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, bundled_models=False, auth="off")
    db = Database(settings.storage.resolved_database_url())
    await db.migrate()
    auth = await Auth.start(settings.access, db, cluster=settings.cluster,
                            host=settings.http.host)
    try:
        assert not auth.enforcing
        transport = httpx.ASGITransport(app=app_for(auth))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            me = await client.get("/v1/me", headers={"Authorization": "Bearer unknown-key"})
            assert me.json() == {"key_id": None, "scope": "admin", "open_mode": True}
            assert (await client.get("/admin/v1/thing")).status_code == 200
    finally:
        await auth.close()
        await db.close()


def test_bearer_parsing() -> None:
    def scope(*headers: tuple[bytes, bytes]) -> Any:
        return {"headers": list(headers)}

    assert _bearer(scope((b"authorization", b"Bearer  abc "))) == "abc"
    assert _bearer(scope((b"authorization", b"abc"))) == "abc"
    assert _bearer(scope((b"x-api-key", b" k1 "))) == "k1"
    assert _bearer(scope((b"authorization", b""))) is None
    assert _bearer(scope()) is None


async def test_an_admin_probe_is_not_metered_a_user_one_is(keyed: Any) -> None:
    """``X-Inferd-Probe`` (the UI's Test button) leaves an admin's request unmetered; from any
    other key the header changes nothing."""
    client, auth, _ = keyed
    user = await auth.admin.create(KeySpec(name="u"))
    await auth.keys.reload()
    probe = {"X-Inferd-Probe": "1"}
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    assert (await client.get("/v1/metered", headers=admin)).json()["metered"] is True
    probed = (await client.get("/v1/metered", headers={**admin, **probe})).json()
    assert probed["metered"] is False and probed["key_id"] is not None
    again = (await client.get("/v1/metered", headers={**admin, **probe})).json()
    assert again == probed
    mine = {"Authorization": f"Bearer {user['key']}", **probe}
    assert (await client.get("/v1/metered", headers=mine)).json() == {
        "key_id": str(user["id"]), "metered": True}
