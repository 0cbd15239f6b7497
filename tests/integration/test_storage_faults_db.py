"""Storage faults and refused values as each real database and driver reports them."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from inferd.store.faults import READ_ONLY, bad_value, storage_fault
from inferd.store.tables import kv

READ_ONLY_SQL = {"sqlite": "PRAGMA query_only=1", "postgresql": "SET TRANSACTION READ ONLY",
                 "mysql": "SET TRANSACTION READ ONLY"}


async def test_a_write_refused_as_read_only_is_a_storage_fault(database: Any) -> None:
    async with database.engine.connect() as conn:
        await conn.execute(sa.text(READ_ONLY_SQL[database.dialect]))
        with pytest.raises(sa_exc.DBAPIError) as refused:
            await conn.execute(sa.insert(kv).values(key="k", value="v", updated_at=0.0))
    assert storage_fault(refused.value) == READ_ONLY
    assert database.writes.failures == 1 and database.writes.last_fault == READ_ONLY
    # a committed write resets the count
    async with database.engine.begin() as conn:
        await conn.execute(sa.insert(kv).values(key="k2", value="v", updated_at=0.0))
    assert database.writes.failures == 0


async def test_a_value_too_long_for_its_column_is_bad_input(database: Any) -> None:
    if database.dialect == "sqlite":
        pytest.skip("SQLite does not enforce column lengths")
    with pytest.raises(sa_exc.DBAPIError) as refused:
        async with database.engine.begin() as conn:
            await conn.execute(sa.insert(kv).values(key="k" * 500, value="v", updated_at=0.0))
    assert bad_value(refused.value) and storage_fault(refused.value) is None
    assert database.writes.failures == 0
