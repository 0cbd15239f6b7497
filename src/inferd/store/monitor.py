"""Read-only views of whole tables for monitoring (the proxy toolkit's ``/tables``), with
secrets redacted.

Only tables on ``ALLOWED_TABLES`` are shown, at most 100 rows, newest first. A column is
redacted when its name says it holds a secret (``SECRET_MARKERS``); inside JSON documents the
same rule applies to keys; a URL has its query values and user information masked
(``inferd.redact``), and a password inside a longer text (``scheme://user:pass@host``) too.
"""

from __future__ import annotations

import re

import sqlalchemy as sa

from inferd.jsontypes import JsonObject, JsonValue
from inferd.redact import redact_url
from inferd.store.db import Database
from inferd.store.tables import metadata

ALLOWED_TABLES = ("api_keys", "llm_models", "metrics", "replicas", "replica_security_rules")
SECRET_MARKERS = ("hash", "secret", "password", "passwd", "credential", "api_key", "apikey",
                  "authorization", "private", "access_token", "refresh_token", "cookie")
REDACTED = "[redacted]"
MAX_ROWS = 100
_URL = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://\S+")
_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^/@:\s]*:)[^/@\s]+@")


def is_secret(name: str) -> bool:
    lowered = name.lower()
    return lowered in {"key", "token", "upstream_key"} or any(m in lowered
                                                              for m in SECRET_MARKERS)


def redact(value: JsonValue) -> JsonValue:
    """``value`` with secrets inside JSON documents and URLs masked."""
    if isinstance(value, dict):
        return {k: REDACTED if is_secret(str(k)) else redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, str) and _URL.fullmatch(value):
        return redact_url(value)
    if isinstance(value, str) and "@" in value:
        return _URL_PASSWORD.sub(lambda m: m.group("head") + REDACTED + "@", value)
    return value


class TableBrowser:
    """Lists the allowed tables and reads their newest rows."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def tables(self) -> list[str]:
        return [name for name in ALLOWED_TABLES if name in metadata.tables]

    async def rows(self, name: str, limit: int = MAX_ROWS) -> list[JsonObject] | None:
        """Up to ``limit`` (at most 100) rows, newest first; ``None`` for a table not shown."""
        if name not in self.tables():
            return None
        table = metadata.tables[name]
        query = sa.select(table).limit(max(1, min(limit, MAX_ROWS)))
        if "id" in table.c:
            query = query.order_by(table.c.id.desc())
        async with self.db.engine.connect() as conn:
            result = await conn.execute(query)
            rows = [dict(r._mapping) for r in result]
        return [{str(k): (REDACTED if v is not None and is_secret(k) else redact(v))
                 for k, v in row.items()} for row in rows]
