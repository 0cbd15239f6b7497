"""The engines' key (``INFERD_ENGINE_API_KEY``): on a process of the cluster's database it is
the ``ENGINE`` principal (the registration routes only); on an engine it is the one key the
engine accepts, with no admin key needed. Never the admin key."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from inferd.auth.bootstrap import StartupRefused, unsafe_cluster_settings
from inferd.auth.principal import ENGINE
from inferd.auth.service import Auth
from inferd.errors import AuthenticationFailed
from inferd.settings import Settings
from inferd.store.db import Database

ADMIN_KEY = "sk-admin-key-of-the-engine-key-tests-7Hq"
ENGINE_KEY = "sk-engines-key-of-the-engine-key-tests-x2Rv"


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'inferd.db'}")
    await database.migrate()
    yield database
    await database.close()


async def _auth(db: Database, **values: object) -> Auth:
    settings = Settings(key_refresh_seconds=3600, **values)  # type: ignore[arg-type]
    return await Auth.start(settings.access, db, cluster=settings.cluster,
                            host=settings.http.host)


@pytest.mark.parametrize("role", ["serve", "gateway", "worker"])
async def test_on_a_gateway_the_engines_key_is_the_engine_principal(
        db: Database, role: str) -> None:
    auth = await _auth(db, role=role, admin_key=ADMIN_KEY, engine_api_key=ENGINE_KEY)
    try:
        engine = await auth.principal(ENGINE_KEY, "127.0.0.1")
        assert engine is ENGINE and engine.engine and not engine.is_admin
        admin = await auth.principal(ADMIN_KEY, "127.0.0.1")
        assert admin.is_admin and not admin.engine
        # no key row: it is known from the setting only, and only there
        assert [k["name"] for k in (await auth.admin.page())["data"]] == ["INFERD_ADMIN_KEY"]
    finally:
        await auth.close()


async def test_without_the_setting_the_engines_key_is_no_key(db: Database) -> None:
    auth = await _auth(db, role="gateway", admin_key=ADMIN_KEY)
    try:
        with pytest.raises(AuthenticationFailed):
            await auth.principal(ENGINE_KEY, "127.0.0.1")
    finally:
        await auth.close()


async def test_an_engine_with_its_own_key_needs_no_admin_key_and_requires_its_key(
        db: Database) -> None:
    # bound to every address, no admin key: it starts, and requires its key
    auth = await _auth(db, role="engine", host="0.0.0.0", engine_api_key=ENGINE_KEY,
                       gateway_url="http://gateway:8000")
    try:
        assert auth.enforcing
        forwarded = await auth.principal(ENGINE_KEY, "10.0.0.5")
        assert not forwarded.engine and forwarded.scope == "user"
        assert forwarded.name == "INFERD_ENGINE_API_KEY"
        with pytest.raises(AuthenticationFailed):
            await auth.principal(None, "10.0.0.5")
        with pytest.raises(AuthenticationFailed):
            await auth.principal(ADMIN_KEY, "10.0.0.6")
    finally:
        await auth.close()
    # on loopback too: an engine with a key is never open
    again = await _auth(db, role="engine", engine_api_key=ENGINE_KEY)
    try:
        assert again.enforcing
    finally:
        await again.close()


@pytest.mark.parametrize("role", ["serve", "gateway", "engine"])
async def test_the_engines_key_is_never_the_admin_key(db: Database, role: str) -> None:
    with pytest.raises(StartupRefused, match="must not be the admin key"):
        await _auth(db, role=role, admin_key=ADMIN_KEY, engine_api_key=ADMIN_KEY)


def test_an_engine_registering_through_a_gateway_needs_only_its_key() -> None:
    """No secret key (it stores no secret) and no admin key; still no placeholder key."""
    engine = {"role": "engine", "host": "0.0.0.0", "gateway_url": "http://gateway:8000"}
    _check(Settings(**engine, engine_api_key="q3VxP0b7Yk2mRt9ZcL4wHs8N1aJdFe"))
    with pytest.raises(StartupRefused, match="INFERD_ENGINE_API_KEY looks like a placeholder"):
        _check(Settings(**engine, engine_api_key="change-me-change-me-000000"))
    with pytest.raises(StartupRefused, match="needs INFERD_ENGINE_API_KEY"):
        _check(Settings(**engine))
    with pytest.raises(StartupRefused, match="needs INFERD_SECRET_KEY"):  # on the database
        _check(Settings(role="engine", host="0.0.0.0",
                        engine_api_key="q3VxP0b7Yk2mRt9ZcL4wHs8N1aJdFe"))


def _check(settings: Settings) -> None:
    unsafe_cluster_settings(settings.cluster, settings.access, host=settings.http.host,
                            secret_key=settings.storage.secret_key)
