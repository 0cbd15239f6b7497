"""Shared fixtures: database URLs for every supported store, and a running ``inferd serve``."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.helpers import InferdProcess, require_service

PG_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/test"

pytest_plugins = ["tests.diffusion"]  # the ``tiny_pipeline`` fixture


async def _pg_exec(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _mysql_exec(sql: str) -> None:
    import aiomysql

    conn = await aiomysql.connect(host="127.0.0.1", port=3306, user="root", password="", db="test")
    try:
        async with conn.cursor() as cur:
            await cur.execute(sql)
        await conn.commit()
    finally:
        conn.close()


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database on each supported store (a fresh one per test)."""
    kind = request.param
    if kind == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"
        return
    require_service(kind)
    name = f"inferd_{uuid.uuid4().hex[:12]}"
    if kind == "postgresql":
        asyncio.run(_pg_exec(f'CREATE DATABASE "{name}"'))
        yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
        asyncio.run(_pg_exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    else:
        asyncio.run(_mysql_exec(f"CREATE DATABASE `{name}`"))
        yield f"mysql+aiomysql://root@127.0.0.1:3306/{name}"
        asyncio.run(_mysql_exec(f"DROP DATABASE IF EXISTS `{name}`"))


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[object]:
    """A migrated ``inferd.store.db.Database`` on each supported store."""
    from inferd.store.db import Database

    db = Database(database_url)
    await db.migrate()
    try:
        yield db
    finally:
        await db.close()


@pytest.fixture(scope="session")
def inferd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InferdProcess]:
    """One ``inferd serve`` with the real bundled models, shared by the end-to-end tests."""
    with InferdProcess(tmp_path_factory.mktemp("serve")) as server:
        yield server
