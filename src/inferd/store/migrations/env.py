"""Alembic environment: runs the migrations on the async engine of the configured URL."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from inferd.store.db import migration_lock, sqlite_wal
from inferd.store.tables import metadata

config = context.config


def _run(connection: Connection) -> None:
    # One migration at a time per database (`inferd migrate` in every starting pod): a later
    # one waits, then reads the version the earlier one committed and finds nothing to do.
    with migration_lock(connection):
        context.configure(connection=connection, target_metadata=metadata,
                          render_as_batch=connection.dialect.name == "sqlite")
        with context.begin_transaction():
            context.run_migrations()


async def _run_async() -> None:
    engine = create_async_engine(config.get_main_option("sqlalchemy.url") or "")
    if engine.dialect.name == "sqlite":  # foreign keys stay off: batch steps copy tables
        event.listen(engine.sync_engine, "connect", sqlite_wal)
    async with engine.connect() as connection:
        await connection.run_sync(_run)
    await engine.dispose()


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=metadata,
                      literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_async())
