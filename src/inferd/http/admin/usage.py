"""``/admin/v1/usage``: usage aggregated by key, model, time, user and team (admin scope)."""

from __future__ import annotations

import time
from typing import Annotated, Literal, cast

from fastapi import APIRouter, Query
from starlette.responses import Response

from inferd.control import GroupBy
from inferd.errors import InvalidRequest
from inferd.http.auth import AdminDep
from inferd.http.deps import ServicesDep
from inferd.http.operation import endpoint
from inferd.http.responses import json_response
from inferd.schemas import answers_control as c

router = APIRouter(prefix="/admin/v1/usage", tags=["admin"])

GROUPS = ("key", "model", "time", "user", "team")


def _groups(text: str) -> list[GroupBy]:
    groups = [g.strip() for g in text.split(",") if g.strip()]
    for group in groups:
        if group not in GROUPS:
            raise InvalidRequest(f"group_by accepts {', '.join(GROUPS)}; got '{group}'.",
                                 param="group_by", code="invalid_value")
    return [cast(GroupBy, g) for g in groups]


@endpoint(router, "GET", "", access="audit", answer=c.UsageGroups, errors=(503,))
async def usage(services: ServicesDep, _admin: AdminDep,
                group_by: str = "key,model",
                bucket: Literal["minute", "hour", "day"] = "hour",
                since: float | None = None, until: float | None = None,
                key_id: str | None = None, model: str | None = None,
                limit: Annotated[int, Query(ge=1, le=10000)] = 1000) -> Response:
    """Requests, errors, tokens, latency and cost per group; ``since``/``until`` are epoch
    seconds."""
    groups = _groups(group_by)
    # with the requests still in the buffer
    store = await services.metering.flushed_store()
    rows = await store.aggregate(group_by=groups, bucket=bucket, since=since, until=until,
                                 key_id=key_id, model=model, limit=limit)
    return json_response({"object": "list", "group_by": groups, "bucket": bucket,
                          "since": since, "until": until, "generated_at": time.time(),
                          "data": rows})


@endpoint(router, "GET", "/records", access="audit", answer=c.UsageRecords, errors=(503,))
async def records(services: ServicesDep, _admin: AdminDep, key_id: str | None = None,
                  limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> Response:
    """The newest usage records, one per request."""
    store = await services.metering.flushed_store()
    return json_response({"object": "list",
                          "data": await store.recent(limit=limit, key_id=key_id)})
