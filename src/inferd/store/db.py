"""The database handle: an async SQLAlchemy engine, sessions, and migrations.

SQLite is the embedded default (WAL, so readers never block the writer); PostgreSQL and
MySQL/MariaDB are the production stores. The same Alembic migrations run on all three.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import re
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.util import await_

from inferd.secretbox import SecretBox
from inferd.settings import StorageSettings
from inferd.store.faults import READ_ONLY, WriteHealth
from inferd.store.tables import kv

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# The database lock ``inferd migrate`` holds while it migrates (PostgreSQL advisory lock key,
# MySQL/MariaDB named lock): processes starting together migrate one after the other, and the
# later ones find the schema done.
MIGRATION_LOCK_KEY = 0x696E_6665_7264_6D67  # "inferdmg"
MIGRATION_LOCK_NAME = "inferd.migrate"
# While writes fail, readiness tries a write of its own at most this often (seconds), of this
# many bytes: more than a page or two, so that it succeeds only where real writes can.
PROBE_INTERVAL = 1.0
PROBE_BYTES = 60_000  # under MySQL's TEXT limit
# Seconds a SQLite reopen waits for the connections in use to be given back (see ``_reopen``).
REOPEN_WAIT = 5.0


def sqlite_wal(dbapi_connection: Any, _record: Any = None) -> None:
    """WAL, and commits that do not wait for the disk: the connections of the migrations too
    (``migrations/env.py``), where a new file's few dozen commits would each wait for fsync."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # NORMAL in WAL mode survives a crash of the process (kill -9); only an OS crash may
    # lose the last transactions.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    sqlite_wal(dbapi_connection)
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


class Database:
    """One database: engine, session factory, health check and migrations.

    ``secrets`` encrypts the secrets the repositories store (replica credentials, webhook
    secrets) and decrypts them when read; without it they are stored as they are.
    """

    def __init__(self, url: str, *, echo: bool = False, secrets: SecretBox | None = None,
                 unready_after_failed_writes: int = 3) -> None:
        """``unready_after_failed_writes``: storage faults on writes in a row after which
        the database counts as not ready (``WriteHealth``)."""
        self.url = url
        self.secrets = secrets or SecretBox()
        parsed = make_url(url)
        self.dialect = parsed.get_backend_name()
        self.engine: AsyncEngine
        if self.dialect == "sqlite":
            database = parsed.database
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            self.engine = create_async_engine(url, echo=echo)
        else:
            # No pre-ping: on asyncpg it costs three round trips per checkout (a transaction
            # around "SELECT 1"), more than most statements it guards. A dead connection fails
            # its statement instead (a 503, see ``unreachable``) and the pool then replaces
            # every connection older than that failure, so one failure per outage, not one
            # per connection.
            self.engine = create_async_engine(url, echo=echo, pool_size=10, max_overflow=20,
                                              pool_recycle=1800)
        self._file = Path(parsed.database) if self.dialect == "sqlite" and parsed.database \
            and parsed.database != ":memory:" else None
        self.open_connections = 0  # DBAPI connections open now
        self._reopening: asyncio.Event | None = None  # set when new connections may open
        self._none_open: asyncio.Event | None = None  # set when the last one has closed
        if self.dialect == "sqlite":
            sync = self.engine.sync_engine
            event.listen(sync, "connect", _sqlite_pragmas)
            event.listen(sync, "do_connect", self._before_connect)
            event.listen(sync.pool, "connect", self._opened)
            event.listen(sync.pool, "close", self._closed)
            event.listen(sync.pool, "close_detached", self._closed_detached)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False,
                                           class_=AsyncSession)
        self.writes = WriteHealth(unready_after_failed_writes)
        self.writes.watch(self.engine.sync_engine)
        self._probed = 0.0
        # The same pool, each statement committing by itself (see ``statement``).
        self._autocommit = (self.engine if self.dialect == "sqlite" else
                            self.engine.execution_options(isolation_level="AUTOCOMMIT"))

    @asynccontextmanager
    async def statement(self) -> AsyncIterator[AsyncConnection]:
        """A connection for one statement that is atomic by itself (an ``UPDATE``, a
        multi-row ``INSERT``, a ``SELECT``) on the hot paths.

        On PostgreSQL and MySQL it runs in autocommit mode: no ``BEGIN`` and ``COMMIT`` round
        trips around it (a transaction of one statement costs three). SQLite is in-process (no
        round trips), where a transaction keeps an executemany atomic and fast.
        """
        if self.dialect == "sqlite":
            async with self.engine.begin() as conn:
                yield conn
            return
        async with self._autocommit.connect() as conn:
            yield conn

    async def ping(self) -> bool:
        """True when a trivial query succeeds."""
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            return True
        except Exception:  # any driver error means "not reachable"
            return False

    # -- SQLite's way back from read-only storage ----------------------------------------------
    # A SQLite file that cannot be written is opened read-only, and so is the WAL index (-shm)
    # beside it; the WAL index is shared by every connection of the process to that file, so
    # it stays read-only, and so do connections opened later, for as long as any connection
    # to the file is open, closed ones that are not yet collected included. The way back is a
    # moment with none open: ``_reopen``.
    def _opened(self, _dbapi_connection: Any, _record: Any) -> None:
        self.open_connections += 1

    def _closed(self, _dbapi_connection: Any, _record: Any) -> None:
        self._closed_detached(_dbapi_connection)

    def _closed_detached(self, _dbapi_connection: Any) -> None:
        self.open_connections -= 1
        if self._none_open is not None and self.open_connections <= 0:
            self._none_open.set()

    def _before_connect(self, *_args: Any) -> None:
        """A new connection waits while the open ones are being closed (``_reopen``); runs in
        SQLAlchemy's greenlet, where it may await."""
        if self._reopening is not None:
            await_(self._reopening.wait())

    def _file_writable(self) -> bool:
        """Whether the SQLite file and its directory can be written (a read-only mount or
        file mode says no, to root too)."""
        return self._file is not None and all(
            os.access(path, os.W_OK) for path in (self._file, self._file.parent)
            if path.exists())

    async def _reopen(self) -> None:
        """Close every connection, then let new ones open: no new connection opens until
        the ones in use are given back (``WriteHealth`` closes each as it comes back while
        the storage is read-only) or ``REOPEN_WAIT`` has passed."""
        if self._reopening is not None:
            return
        self._reopening, self._none_open = asyncio.Event(), asyncio.Event()
        try:
            await self.engine.dispose()
            if self.open_connections > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._none_open.wait(), REOPEN_WAIT)
            # Python's sqlite3 closes with sqlite3_close_v2: a closed connection whose
            # statements are still held by cursors not yet collected (reference cycles, which
            # the cyclic collector reaches late: ``inferd.cli``) keeps its files open until
            # they are. Collect them now.
            gc.collect()
        finally:
            self._reopening.set()
            self._reopening = self._none_open = None

    async def writable(self) -> bool:
        """False while writes fail for lack of storage (``WriteHealth``). While they do, a
        call tries a write of its own (``PROBE_BYTES``, at most once per ``PROBE_INTERVAL``,
        removed in the same transaction), so that readiness comes back when the storage does,
        without waiting for traffic."""
        if self.writes.ok:
            return True
        now = time.monotonic()
        if now - self._probed >= PROBE_INTERVAL:
            self._probed = now
            if self.dialect == "sqlite" and self.writes.last_fault == READ_ONLY:
                if not self._file_writable():
                    return False  # still read-only: nothing to try
                await self._reopen()  # writable again: from no connection at all
            key = f"probe:{secrets.token_hex(8)}"  # one per call: no two probes collide
            try:
                async with self.engine.begin() as conn:
                    await conn.execute(sa.insert(kv).values(key=key, value="p" * PROBE_BYTES,
                                                            updated_at=time.time()))
                    await conn.execute(sa.delete(kv).where(kv.c.key == key))
            except Exception:  # counted by WriteHealth when it is a storage fault
                pass
        return self.writes.ok

    async def migrate(self) -> None:
        """Bring the schema to the newest revision (runs Alembic in a worker thread). A
        database already there (a restart, a CLI command) is left alone without loading
        Alembic and the migrations."""
        if await self.at_head():
            return
        await asyncio.to_thread(upgrade, self.url)

    async def at_head(self) -> bool:
        """True when the revisions the database records are the migrations' heads (read
        from their files: ``schema_heads``); False when it differs, has none, or they could
        not be read (then Alembic decides)."""
        heads = schema_heads()
        if heads is None:
            return False
        async with self.engine.connect() as conn:
            return await conn.run_sync(_stored_revisions) == heads

    async def pending_migrations(self) -> bool:
        """True when the schema is older than this code (``inferd migrate`` has not run)."""
        if await self.at_head():
            return False
        from alembic.runtime.migration import MigrationContext
        from alembic.script import ScriptDirectory

        heads = set(ScriptDirectory.from_config(alembic_config(self.url)).get_heads())
        async with self.engine.connect() as conn:
            current = await conn.run_sync(
                lambda sync: set(MigrationContext.configure(sync).get_current_heads()))
        return current != heads

    async def close(self) -> None:
        await self.engine.dispose()


def open_database(settings: StorageSettings) -> Database:
    """The database ``settings`` name, with their secret key (``INFERD_SECRET_KEY``)."""
    return Database(settings.resolved_database_url(),
                    secrets=SecretBox.from_setting(settings.secret_key),
                    unready_after_failed_writes=settings.unready_after_failed_writes)


# What a store call may raise when the database goes away (wrapped by SQLAlchemy or not).
STORE_ERRORS: tuple[type[Exception], ...] = (sa_exc.DBAPIError, ConnectionError)


def unreachable(exc: BaseException) -> bool:
    """True when ``exc`` means the database cannot be reached right now (a restart, a dropped
    or terminated connection, a refused connect): a 503 to the client, not a bug. The pool
    then replaces its connections, so the next request recovers without a restart."""
    import asyncpg  # type: ignore[import-untyped]

    lost = (ConnectionError, sa_exc.DisconnectionError, asyncpg.PostgresConnectionError,
            asyncpg.exceptions.ConnectionDoesNotExistError,
            asyncpg.exceptions.OperatorInterventionError)
    seen: BaseException | None = exc
    for _ in range(10):  # the driver's error is wrapped a few times
        if seen is None:
            return False
        if isinstance(seen, lost) or (isinstance(seen, sa_exc.DBAPIError)
                                      and (seen.connection_invalidated
                                           or isinstance(seen, sa_exc.OperationalError))):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@contextlib.contextmanager
def migration_lock(connection: sa.Connection) -> Iterator[None]:
    """Hold the migration lock on ``connection`` for the block (a session lock: it outlives
    the block's transactions; SQLite needs none, one file has one writer)."""
    dialect = connection.dialect.name
    if dialect == "postgresql":
        connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
        release = text("SELECT pg_advisory_unlock(:k)")
    elif dialect in ("mysql", "mariadb"):
        got = connection.execute(text("SELECT GET_LOCK(:n, :t)"),
                                 {"n": MIGRATION_LOCK_NAME, "t": 3600}).scalar()
        if got != 1:
            raise RuntimeError("another inferd migrate held the migration lock for an hour")
        release = text("SELECT RELEASE_LOCK(:n)")
    else:
        yield
        return
    connection.commit()  # end the statement's transaction: Alembic begins its own
    try:
        yield
    finally:
        connection.execute(release, {"k": MIGRATION_LOCK_KEY, "n": MIGRATION_LOCK_NAME})
        connection.commit()


# Alembic (and the Mako templates and SQL dialects it loads) is imported by the functions that
# migrate: a process whose schema is checked or migrated imports it then, a CLI command that
# only reads or writes rows never does.
def alembic_config(url: str) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


_REVISION = re.compile(r'^revision = "([^"]+)"$', re.MULTILINE)
_DOWN_REVISION = re.compile(r'^down_revision = (?:None|"([^"]+)")$', re.MULTILINE)


def schema_heads() -> frozenset[str] | None:
    """The revisions no migration follows, read from the files of ``migrations/versions``
    (``revision = "..."``, ``down_revision = "..."`` or ``None``) without importing them (a
    millisecond); None when a file says either otherwise (a merge, a computed value): Alembic
    decides."""
    revisions: set[str] = set()
    followed: set[str] = set()
    for path in (MIGRATIONS_DIR / "versions").glob("*.py"):
        source = path.read_text()
        revision = _REVISION.findall(source)
        down = _DOWN_REVISION.findall(source)
        if len(revision) != 1 or len(down) != 1:
            return None
        revisions.add(revision[0])
        if down[0]:
            followed.add(down[0])
    return frozenset(revisions - followed) or None


def _stored_revisions(connection: sa.Connection) -> frozenset[str]:
    """The revisions Alembic recorded in the database (none: not migrated yet)."""
    if not sa.inspect(connection).has_table("alembic_version"):
        return frozenset()
    rows = connection.execute(text("SELECT version_num FROM alembic_version")).scalars()
    return frozenset(str(row) for row in rows)


def upgrade(url: str, revision: str = "head") -> None:
    """Run migrations up to ``revision``; blocking, so call it outside the event loop."""
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str = "base") -> None:
    from alembic import command

    command.downgrade(alembic_config(url), revision)
