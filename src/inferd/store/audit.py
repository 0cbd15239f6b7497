"""Repository of the audit log (``audit_events``): append, page with filters, prune.

There is no update and no delete of one event: rows are inserted (``append``) and removed
only in bulk past the retention (``prune``). Pages run newest first by id; ``after`` is the id
of the last event of the previous page.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

import sqlalchemy as sa

from inferd.jsontypes import JsonValue
from inferd.store.db import Database
from inferd.store.tables_audit import audit_events as t

# The columns an event is written with (``id`` is the store's).
FIELDS = (
    "created_at",
    "actor_key_id",
    "actor_name",
    "actor_scope",
    "actor_user",
    "via",
    "action",
    "object_type",
    "object_id",
    "before",
    "after",
    "client_address",
    "request_id",
)


# How the change was made: over the API, by a command, or by inferd itself.
Via = Literal["api", "cli", "system"]


class NewEvent(TypedDict):
    """An event to write (``FIELDS``); ``before`` and ``after``: the object's views, every
    secret masked (``inferd.audit.masked``)."""

    created_at: float
    actor_key_id: str | None
    actor_name: str
    actor_scope: str | None
    actor_user: str | None
    via: Via
    action: str
    object_type: str
    object_id: str | None
    before: JsonValue
    after: JsonValue
    client_address: str | None
    request_id: str | None


class StoredEvent(NewEvent):
    """An event as stored: with its id."""

    id: int


def _event(row: sa.Row[Any]) -> StoredEvent:
    return StoredEvent(id=row.id, created_at=row.created_at, actor_key_id=row.actor_key_id,
                       actor_name=row.actor_name, actor_scope=row.actor_scope,
                       actor_user=row.actor_user, via=row.via, action=row.action,
                       object_type=row.object_type, object_id=row.object_id,
                       before=row.before, after=row.after,
                       client_address=row.client_address, request_id=row.request_id)


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """Filters of a page of events (None: any)."""

    since: float | None = None  # created_at >= since
    until: float | None = None  # created_at < until
    actor: str | None = None  # the actor's key id
    action: str | None = None  # exact, or a prefix ending with "." ("key.")
    object_type: str | None = None
    object_id: str | None = None
    request_id: str | None = None


class AuditStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def append(self, events: Sequence[NewEvent]) -> list[int]:
        """Insert ``events`` (dicts of ``FIELDS``) in one transaction; their ids."""
        ids: list[int] = []
        async with self.db.engine.begin() as conn:
            for event in events:
                result = await conn.execute(sa.insert(t).values({f: event.get(f) for f in FIELDS}))
                primary = result.inserted_primary_key
                ids.append(int(primary[0]) if primary else 0)
        return ids

    async def page(
        self, query: AuditQuery, *, after: int | None = None, limit: int = 100
    ) -> tuple[list[StoredEvent], bool]:
        """Up to ``limit`` events matching ``query``, newest first, older than the event
        ``after``; and whether there are more."""
        where: list[sa.ColumnElement[bool]] = []
        if after is not None:
            where.append(t.c.id < after)
        if query.since is not None:
            where.append(t.c.created_at >= query.since)
        if query.until is not None:
            where.append(t.c.created_at < query.until)
        if query.actor is not None:
            where.append(t.c.actor_key_id == query.actor)
        if query.action is not None:
            if query.action.endswith("."):
                where.append(t.c.action.startswith(query.action, autoescape=True))
            else:
                where.append(t.c.action == query.action)
        if query.object_type is not None:
            where.append(t.c.object_type == query.object_type)
        if query.object_id is not None:
            where.append(t.c.object_id == query.object_id)
        if query.request_id is not None:
            where.append(t.c.request_id == query.request_id)
        statement = sa.select(t).where(*where).order_by(t.c.id.desc()).limit(limit + 1)
        async with self.db.engine.connect() as conn:
            rows = [_event(r) for r in await conn.execute(statement)]
        return rows[:limit], len(rows) > limit

    async def prune(self, before: float) -> int:
        """Remove the events older than ``before`` (the retention); how many."""
        async with self.db.engine.begin() as conn:
            result = await conn.execute(sa.delete(t).where(t.c.created_at < before))
        return int(result.rowcount or 0)

    async def count(self) -> int:
        async with self.db.engine.connect() as conn:
            return int(
                (await conn.execute(sa.select(sa.func.count()).select_from(t))).scalar() or 0
            )
