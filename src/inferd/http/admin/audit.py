"""``/admin/v1/audit``: the audit log, read by admin and auditor keys (``audit`` access).

Filters: a time range (``since``/``until``, epoch seconds), the actor's key id, the action
(exact, or a prefix ending in ``.`` such as ``key.``), the object's type and id, the request
id. The list
pages newest first by cursor (``after``: the ``last_id`` of the previous page, with
``has_more``); ``/export`` streams every matching event as JSON lines. Nothing here, nor
anywhere in the API, changes or deletes an event.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Query
from starlette.responses import Response, StreamingResponse

from inferd.audit import AuditQuery, EventView
from inferd.http.auth import AdminDep
from inferd.http.deps import ServicesDep
from inferd.http.operation import endpoint
from inferd.http.responses import json_response
from inferd.schemas import answers_control as c

router = APIRouter(prefix="/admin/v1/audit", tags=["admin"])

JSONL = "application/jsonl"
MAX_TIME = 1e11  # epoch seconds: year 5138
Text = Annotated[str | None, Query(min_length=1, max_length=191)]
Time = Annotated[float | None, Query(ge=0, le=MAX_TIME, allow_inf_nan=False)]


def _filters(
    since: Time = None,
    until: Time = None,
    actor: Text = None,
    action: Text = None,
    object_type: Text = None,
    object_id: Text = None,
    request_id: Text = None,
) -> AuditQuery:
    """The events asked for: the same filters on the list and the export."""
    return AuditQuery(
        since=since,
        until=until,
        actor=actor,
        action=action,
        object_type=object_type,
        object_id=object_id,
        request_id=request_id,
    )


FiltersDep = Annotated[AuditQuery, Depends(_filters)]


@endpoint(router, "GET", "", access="audit", answer=c.AuditEventList, errors=(503,))
async def list_events(
    services: ServicesDep,
    _reader: AdminDep,
    query: FiltersDep,
    after: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    """Events newest first; ``after`` is the ``last_id`` of the previous page."""
    return json_response(await services.control.audit.page(query, after=after, limit=limit))


@endpoint(router, "GET", "/export", access="audit", media=(JSONL,), errors=(503,))
async def export_events(
    services: ServicesDep,
    _reader: AdminDep,
    query: FiltersDep,
) -> Response:
    """Every matching event as JSON lines (one event a line, newest first)."""
    events = services.control.audit.export(query)
    first = [event async for event in _first(events)]  # a database error is a 503, not a cut

    async def lines() -> AsyncIterator[bytes]:
        for event in first:
            yield orjson.dumps(event) + b"\n"
        async for event in events:
            yield orjson.dumps(event) + b"\n"

    return StreamingResponse(
        lines(),
        media_type=JSONL,
        headers={"Content-Disposition": 'attachment; filename="audit.jsonl"'},
    )


async def _first(events: AsyncIterator[EventView]) -> AsyncIterator[EventView]:
    """The first event of ``events`` (none when empty), read before the answer starts."""
    async for event in events:
        yield event
        return
