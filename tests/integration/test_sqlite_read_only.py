"""A SQLite database on storage that turns read-only and writable again: writes fail as a
read-only storage fault meanwhile, reads go on, and writes work again without a new process.

SQLite opens a file it cannot write read-only, with the WAL index beside it, which every
connection of the process to that file then shares: it stays read-only, for new connections
too, while any connection to the file is open, closed ones that the cyclic collector has not
reached yet included (the server runs it at a high threshold: ``inferd.cli``; disabled here,
so that the test does not depend on when it runs). The data directory is a tmpfs remounted
read-only (root only: skipped otherwise); as root, ``chmod`` does not stop writes.
"""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from inferd.store.db import Database, upgrade
from inferd.store.faults import READ_ONLY, storage_fault
from inferd.store.tables import kv
from tests.helpers import wait_for_async

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


def mount(*args: str) -> None:
    result = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"mount {' '.join(args)}: {result.stderr.strip()}")


@pytest.fixture
def data(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "data"
    path.mkdir()
    try:
        mount("-t", "tmpfs", "-o", "size=16m", "tmpfs", str(path))
    except RuntimeError as exc:
        pytest.skip(f"cannot mount a tmpfs here: {exc}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture
def late_collector() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def killed_while_writing(path: Path) -> None:
    """A row written by a process killed with the database open: it leaves the -wal and -shm
    files, without which a WAL database cannot be opened on a read-only mount."""
    script = ("import os, sqlite3; c = sqlite3.connect(os.environ['DB']); "
              "c.execute('PRAGMA journal_mode=WAL'); "
              "c.execute(\"INSERT INTO kv (key, value, updated_at) VALUES ('before', 'v', 0)\"); "
              "c.commit(); os.kill(os.getpid(), 9)")
    subprocess.run([sys.executable, "-c", script], env={**os.environ, "DB": str(path)},
                   check=False)
    assert (path.parent / (path.name + "-shm")).exists()


def write(key: str) -> sa.Insert:
    return sa.insert(kv).values(key=key, value="v", updated_at=0.0)


async def test_writes_come_back_when_the_storage_turns_writable(
        data: Path, late_collector: None) -> None:
    path = data / "inferd.db"
    url = f"sqlite+aiosqlite:///{path}"
    await asyncio.to_thread(upgrade, url)
    killed_while_writing(path)
    mount("-o", "remount,ro", str(data))
    db = Database(url, unready_after_failed_writes=1)
    try:
        faults = []
        for i in range(5):  # reads go on; each write is a read-only storage fault
            async with db.engine.connect() as conn:
                keys = (await conn.execute(sa.select(kv.c.key))).scalars().all()
            assert "before" in keys
            try:  # not pytest.raises: an error kept holds its cursor, and so the file, open
                async with db.engine.begin() as conn:
                    await conn.execute(write(f"refused {i}"))
            except sa_exc.DBAPIError as exc:
                faults.append(storage_fault(exc))
        assert faults == [READ_ONLY] * 5
        assert not await db.writable()
        assert db.writes.last_fault == READ_ONLY

        mount("-o", "remount,rw", str(data))
        await wait_for_async(db.writable, within=30, interval=0.2,
                             what="writes working again")
        async with db.engine.begin() as conn:
            await conn.execute(write("after"))
        async with db.engine.connect() as conn:
            keys = (await conn.execute(sa.select(kv.c.key))).scalars().all()
        assert {"before", "after"} <= set(keys)
        assert not [key for key in keys if key.startswith("refused")]
    finally:
        await db.close()
