"""The database handle: an async SQLAlchemy engine, sessions, and migrations.

SQLite is the embedded default (WAL, so readers never block the writer); PostgreSQL and
MySQL/MariaDB are the production stores. The same Alembic migrations run on all three.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # NORMAL in WAL mode survives a crash of the process (kill -9); only an OS crash may
    # lose the last transactions.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


class Database:
    """One database: engine, session factory, health check and migrations."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        parsed = make_url(url)
        self.dialect = parsed.get_backend_name()
        kwargs: dict[str, Any] = {"echo": echo}
        if self.dialect == "sqlite":
            database = parsed.database
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
        else:
            kwargs.update(pool_size=10, max_overflow=20, pool_pre_ping=True, pool_recycle=1800)
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        if self.dialect == "sqlite":
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False,
                                           class_=AsyncSession)

    async def ping(self) -> bool:
        """True when a trivial query succeeds."""
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            return True
        except Exception:  # any driver error means "not reachable"
            return False

    async def migrate(self) -> None:
        """Bring the schema to the newest revision (runs Alembic in a worker thread)."""
        await asyncio.to_thread(upgrade, self.url)

    async def pending_migrations(self) -> bool:
        """True when the schema is older than this code (``inferd migrate`` has not run)."""
        from alembic.runtime.migration import MigrationContext
        from alembic.script import ScriptDirectory

        heads = set(ScriptDirectory.from_config(alembic_config(self.url)).get_heads())
        async with self.engine.connect() as conn:
            current = await conn.run_sync(
                lambda sync: set(MigrationContext.configure(sync).get_current_heads()))
        return current != heads

    async def close(self) -> None:
        await self.engine.dispose()


# What a store call may raise when the database goes away (wrapped by SQLAlchemy or not).
STORE_ERRORS: tuple[type[Exception], ...] = (sa_exc.DBAPIError, ConnectionError)


def unreachable(exc: BaseException) -> bool:
    """True when ``exc`` means the database cannot be reached right now (a restart, a dropped
    or terminated connection, a refused connect): a 503 to the client, not a bug. The pool's
    pre-ping replaces dead connections, so the next request recovers without a restart."""
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


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Run migrations up to ``revision``; blocking, so call it outside the event loop."""
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(url), revision)
