"""`inferd migrate` holds a database lock, so that the init containers of pods starting
together (deploy/k8s) migrate once: one waits while another migrates, then finds it done."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from inferd.store.db import MIGRATION_LOCK_KEY, MIGRATION_LOCK_NAME
from tests.conftest import fresh_database
from tests.helpers import wait_for


def migrate(url: str, data_dir: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "INFERD_DATABASE_URL": url, "INFERD_DATA_DIR": str(data_dir)}
    return subprocess.Popen([sys.executable, "-m", "inferd", "migrate"], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


class Holder:
    """The migration lock, held by the test on a connection of its own."""

    def __init__(self, kind: str, url: str) -> None:
        self.kind = kind
        self.url = url
        self.conn: Any = None

    async def take(self) -> None:
        if self.kind == "postgresql":
            import asyncpg

            self.conn = await asyncpg.connect(self.url.replace("+asyncpg", ""))
            await self.conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
        else:
            import aiomysql

            db = self.url.rsplit("/", 1)[1]
            self.conn = await aiomysql.connect(host="127.0.0.1", port=3306, user="root",
                                               password="", db=db)
            async with self.conn.cursor() as cur:
                # the name is the server's, not the database's: a migrate of another test's
                # database may hold it for a while
                await cur.execute("SELECT GET_LOCK(%s, 300)", (MIGRATION_LOCK_NAME,))
                assert (await cur.fetchone())[0] == 1

    async def waiters(self) -> int:
        """Sessions of this database waiting for the lock (the server's other databases
        are other tests', which may be migrating at the same time)."""
        if self.kind == "postgresql":
            count: int = await self.conn.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())")
            return count
        async with self.conn.cursor() as cur:
            await cur.execute("SELECT count(*) FROM information_schema.PROCESSLIST "
                              "WHERE INFO LIKE %s AND ID <> CONNECTION_ID() AND DB = DATABASE()",
                              ("%GET_LOCK%",))
            return int((await cur.fetchone())[0])

    async def tables(self) -> int:
        if self.kind == "postgresql":
            n: int = await self.conn.fetchval(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'")
            return n
        async with self.conn.cursor() as cur:
            await cur.execute("SELECT count(*) FROM information_schema.tables "
                              "WHERE table_schema = DATABASE()")
            return int((await cur.fetchone())[0])

    async def release(self) -> None:
        if self.kind == "postgresql":
            await self.conn.close()
        else:
            self.conn.close()


@pytest.mark.parametrize("kind", ["postgresql", "mariadb"])
def test_migrate_waits_for_the_lock_then_a_second_one_finds_it_done(
        kind: str, tmp_path: Path) -> None:
    with fresh_database(kind, tmp_path) as url:
        holder = Holder(kind, url)
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(holder.take())
            first = migrate(url, tmp_path)
            try:
                # it waits on the lock, and has changed nothing while it waits
                wait_for(lambda: loop.run_until_complete(holder.waiters()) == 1
                         or first.poll() is not None,
                         within=120, what="a migrate waiting on the lock")
                assert first.poll() is None, first.communicate()[0]
                assert loop.run_until_complete(holder.tables()) == 0
                second = migrate(url, tmp_path)
                wait_for(lambda: loop.run_until_complete(holder.waiters()) == 2
                         or second.poll() is not None,
                         within=120, what="a migrate waiting on the lock")
                assert second.poll() is None, second.communicate()[0]
            finally:
                loop.run_until_complete(holder.release())
            for process in (first, second):
                out, _ = process.communicate(timeout=120)
                assert process.returncode == 0, out
        finally:
            loop.close()

        from inferd.store.db import Database

        async def pending() -> bool:
            db = Database(url)
            try:
                return await db.pending_migrations()
            finally:
                await db.close()

        assert asyncio.run(pending()) is False
