"""Shared fixtures: database URLs for every supported store, and a running ``inferd serve``."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import sqlite3
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

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


DATABASES = ["sqlite", "postgresql", "mariadb"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On a pytest-xdist worker, a test marked ``serial`` is skipped, not run beside the other
    workers' tests: it stops a service they use, or bounds what their load would move.
    ``make pytest`` deselects these in its parallel pass and runs them after it, alone."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    alone = pytest.mark.skip(reason="serial: needs the machine to itself; run it without -n "
                                    "(make pytest runs it after the parallel pass)")
    for item in items:
        if item.get_closest_marker("serial"):
            item.add_marker(alone)


@contextmanager
def fresh_database(kind: str, directory: Path) -> Iterator[str]:
    """An empty database of ``kind`` for the block (SQLite: a file in ``directory``); yields
    its SQLAlchemy async URL (``inferd`` takes it as ``INFERD_DATABASE_URL`` too)."""
    if kind == "sqlite":
        yield f"sqlite+aiosqlite:///{directory / 'test.db'}"
        return
    require_service(kind)
    name = f"inferd_{uuid.uuid4().hex[:12]}"
    if kind == "postgresql":
        asyncio.run(_pg_exec(f'CREATE DATABASE "{name}"'))
        try:
            yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
        finally:
            asyncio.run(_pg_exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    else:
        asyncio.run(_mysql_exec(f"CREATE DATABASE `{name}`"))
        try:
            yield f"mysql+aiomysql://root@127.0.0.1:3306/{name}"
        finally:
            asyncio.run(_mysql_exec(f"DROP DATABASE IF EXISTS `{name}`"))


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database on each supported store (a fresh one per test)."""
    with fresh_database(request.param, tmp_path) as url:
        yield url


class MigratedTemplates:
    """One migrated database per store for the session, copied into each test's empty one:
    migrating takes seconds on MariaDB (a few dozen DDL statements) and a second on SQLite
    (Alembic), a copy a fraction of that. PostgreSQL migrates as fast as it copies: no copy."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.urls: dict[str, str] = {}
        self._open = ExitStack()

    def url(self, kind: str) -> str:
        """The template of ``kind``, made at the first call (outside any event loop)."""
        if kind not in self.urls:
            directory = self.directory / kind
            directory.mkdir()
            url = self._open.enter_context(fresh_database(kind, directory))
            asyncio.run(_migrate(url))
            self.urls[kind] = url
        return self.urls[kind]

    def close(self) -> None:
        self._open.close()


async def _migrate(url: str) -> None:
    from inferd.store.db import Database

    db = Database(url)
    try:
        await db.migrate()
    finally:
        await db.close()


def _kind_of(url: str) -> str:
    return {"sqlite": "sqlite", "postgresql": "postgresql", "mysql": "mariadb"}[
        url.split(":", 1)[0].split("+", 1)[0]]


async def copy_database(template: str, target: str) -> None:
    """Make the empty database ``target`` a copy of ``template`` (same store): every table
    as ``SHOW CREATE TABLE`` gives it, and its rows (MariaDB); the file (SQLite)."""
    kind = _kind_of(target)
    if kind == "sqlite":
        source = sqlite3.connect(template.split("///", 1)[1])
        copy = sqlite3.connect(target.split("///", 1)[1])
        try:
            source.backup(copy)
        finally:
            copy.close()
            source.close()
        return
    assert kind == "mariadb", kind
    import aiomysql

    source_name = template.rsplit("/", 1)[1]
    conn = await aiomysql.connect(host="127.0.0.1", port=3306, user="root", password="",
                                  db=target.rsplit("/", 1)[1], autocommit=True)
    try:
        async with conn.cursor() as cur:
            await cur.execute("SET SESSION foreign_key_checks = 0")
            await cur.execute(f"SHOW FULL TABLES FROM `{source_name}`")
            tables = [name for name, kind in await cur.fetchall() if kind == "BASE TABLE"]
            for name in tables:
                await cur.execute(f"SHOW CREATE TABLE `{source_name}`.`{name}`")
                await cur.execute((await cur.fetchone())[1])
                await cur.execute(f"INSERT INTO `{name}` SELECT * FROM `{source_name}`.`{name}`")
    finally:
        conn.close()


@pytest.fixture(scope="session")
def migrated_templates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MigratedTemplates]:
    templates = MigratedTemplates(tmp_path_factory.mktemp("templates"))
    try:
        yield templates
    finally:
        templates.close()


@pytest.fixture
def sqlite_template(migrated_templates: MigratedTemplates) -> str:
    """The session's migrated SQLite database (its URL), for ``copy_database``."""
    return migrated_templates.url("sqlite")


@pytest.fixture
def database_template(database_url: str, migrated_templates: MigratedTemplates) -> str | None:
    """The session's migrated database of ``database_url``'s store (None: PostgreSQL)."""
    kind = _kind_of(database_url)
    return None if kind == "postgresql" else migrated_templates.url(kind)


@pytest.fixture
async def database(database_url: str, database_template: str | None) -> AsyncIterator[object]:
    """A migrated ``inferd.store.db.Database`` on each supported store (a copy of the
    session's migrated template where copying is the faster; ``migrate`` finds it current)."""
    from inferd.store.db import Database

    if database_template is not None:
        await copy_database(database_template, database_url)
    db = Database(database_url)
    await db.migrate()
    try:
        yield db
    finally:
        await db.close()


@pytest.fixture(scope="session")
def inferd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InferdProcess]:
    """One ``inferd serve`` with the real bundled models, shared by the end-to-end tests.

    Webhooks may go to 127.0.0.1 (the tests' receivers) besides public addresses.
    """
    env = {"INFERD_JOB_WEBHOOK_ALLOWED_HOSTS": '["public", "127.0.0.1/32"]'}
    with InferdProcess(tmp_path_factory.mktemp("serve"), env=env) as server:
        yield server


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, list[str]]]:
    """A resolver the test controls: a name put in the map resolves to its addresses (change
    them to rebind it); other names resolve as usual."""
    answers: dict[str, list[str]] = {}
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name not in answers:
            return real(host, port, *args, **kwargs)
        return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", (a, int(port or 0), 0, 0))
                if ipaddress.ip_address(a).version == 6 else
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, int(port or 0)))
                for a in answers[name]]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield answers
