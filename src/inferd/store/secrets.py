"""Every secret the database holds encrypted, re-encrypted at once (``inferd secrets rotate``).

The stored secrets are the replicas' upstream credentials (``replica_security_rules.secret``),
the keys' webhook secrets (``api_keys.webhook_secret``) and the installation's webhook secret
(``kv``). ``rotate`` rewrites each with the first key of ``Database.secrets`` (plaintext ones
are encrypted too), in one transaction: a failure leaves every value as it was.
"""

from __future__ import annotations

import sqlalchemy as sa

from inferd.store.db import Database
from inferd.store.repo import SECRET_KEYS
from inferd.store.tables import kv
from inferd.store.tables_control import api_keys
from inferd.store.tables_replicas import replica_security_rules

# (table, key column, secret column) of every stored secret
SEALED = ((replica_security_rules, "id", "secret"), (api_keys, "id", "webhook_secret"),
          (kv, "key", "value"))


async def rotate(db: Database) -> int:
    """Re-encrypt every stored secret with the newest key; returns how many were rewritten."""
    count = 0
    async with db.engine.begin() as conn:
        for table, key, column in SEALED:
            query = sa.select(table.c[key], table.c[column])
            if table is kv:
                query = query.where(kv.c.key.in_(SECRET_KEYS))
            for row_key, stored in (await conn.execute(query)).all():
                if not stored:
                    continue
                await conn.execute(sa.update(table).where(table.c[key] == row_key)
                                   .values({column: db.secrets.rotate(str(stored))}))
                count += 1
    return count
