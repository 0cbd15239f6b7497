"""The request log: ``/admin/v1/requests`` (admin and auditor keys: every key's requests) and
``/v1/requests`` (any key: its own requests only).

Both take the same filters (``RequestFilters``, one dependency): a time range (``from``/``to``,
epoch seconds), the key id (on ``/v1/requests`` only the caller's matches), the model, the
status (``429``, a class such as ``5xx``, or ``error`` for every status from 400), the error
code, the request id and a least latency in milliseconds. Pages run newest first by cursor:
``cursor`` is the ``next_cursor`` of the previous page (given while ``has_more``), never an
offset.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from starlette.responses import Response

from inferd.errors import InvalidRequest
from inferd.http.auth import AdminDep
from inferd.http.deps import PrincipalDep, ServicesDep
from inferd.http.operation import endpoint
from inferd.http.responses import json_response
from inferd.reqlog import RequestQuery, parse_cursor, status_range
from inferd.schemas import answers_control as c

router = APIRouter(tags=["requests"])

MAX_TIME = 1e11  # epoch seconds: year 5138
Text = Annotated[str | None, Query(min_length=1, max_length=191)]
STATUS_HELP = "A status (429), a class (4xx, 5xx) or `error` (every status from 400)."


def _status_range(status: str | None) -> tuple[int | None, int | None]:
    if status is None:
        return None, None
    statuses = status_range(status)
    if statuses is None:
        raise InvalidRequest(f"status is a status code (429), a class (5xx) or 'error'; "
                             f"got '{status[:20]}'.", param="status", code="invalid_value")
    return statuses


class RequestFilters:
    """The filters and the page of a request log read, from the query string."""

    def __init__(
        self,
        since: Annotated[float | None, Query(alias="from", ge=0, le=MAX_TIME,
                                             allow_inf_nan=False,
                                             description="Epoch seconds (inclusive).")] = None,
        until: Annotated[float | None, Query(alias="to", ge=0, le=MAX_TIME,
                                             allow_inf_nan=False,
                                             description="Epoch seconds (exclusive).")] = None,
        key_id: Annotated[str | None, Query(min_length=1, max_length=64,
                                            description="A key's id.")] = None,
        model: Text = None,
        status: Annotated[str | None, Query(max_length=8, description=STATUS_HELP)] = None,
        error: Annotated[str | None, Query(min_length=1, max_length=64,
                                           description="An error code (rate_limit_exceeded).")]
        = None,
        request_id: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
        min_latency_ms: Annotated[float | None, Query(ge=0, le=1e9, allow_inf_nan=False)]
        = None,
        user: Annotated[int | None, Query(ge=1, le=2**63 - 1,
                                          description="A user's id: the requests of its keys "
                                                      "(as they were when made).")] = None,
        team: Annotated[int | None, Query(ge=1, le=2**63 - 1,
                                          description="A team's id: the requests of its keys "
                                                      "(as they were when made).")] = None,
        cursor: Annotated[str | None, Query(max_length=64,
                                            description="`next_cursor` of the previous page.")]
        = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    ) -> None:
        status_from, status_to = _status_range(status)
        self.query = RequestQuery(since=since, until=until, key_id=key_id, model=model,
                                  status_from=status_from, status_to=status_to, error=error,
                                  request_id=request_id, min_latency_ms=min_latency_ms,
                                  user_id=user, team_id=team)
        self.cursor = None
        if cursor is not None:
            self.cursor = parse_cursor(cursor)
            if self.cursor is None:
                raise InvalidRequest("cursor is not a cursor this API gave.", param="cursor",
                                     code="invalid_value")
        self.limit = limit


FiltersDep = Annotated[RequestFilters, Depends()]
EMPTY = {"object": "list", "data": [], "has_more": False, "next_cursor": None}


@endpoint(router, "GET", "/admin/v1/requests", access="audit", answer=c.RequestList,
          errors=(400, 503))
async def list_all(services: ServicesDep, _reader: AdminDep, filters: FiltersDep) -> Response:
    """Every key's requests, newest first; ``key_id`` keeps one key's."""
    log = services.metering.requests
    await log.flush()  # with the requests still in the writer's buffer
    return json_response(await log.page(filters.query, cursor=filters.cursor,
                                        limit=filters.limit))


@endpoint(router, "GET", "/v1/requests", access="key", answer=c.RequestList,
          errors=(400, 503))
async def list_own(services: ServicesDep, principal: PrincipalDep,
                   filters: FiltersDep) -> Response:
    """The calling key's requests, newest first (an admin key's own too: every key's are on
    ``/admin/v1/requests``); a ``key_id`` other than the caller's matches nothing."""
    asked = filters.query.key_id
    if asked is not None and asked != principal.key_id:
        return json_response(EMPTY)
    log = services.metering.requests
    await log.flush()
    query = dataclasses.replace(filters.query, key_id=principal.key_id, own=True)
    return json_response(await log.page(query, cursor=filters.cursor, limit=filters.limit))

