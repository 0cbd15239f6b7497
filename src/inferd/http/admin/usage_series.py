"""Usage over time for charts: ``/admin/v1/usage/series`` (any key, any model) and
``/v1/usage/series`` (the caller's own key only, so a user key can chart its own traffic)."""

from __future__ import annotations

import time
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from starlette.responses import Response

from inferd.auth.principal import Principal
from inferd.control import MAX_BUCKETS, SplitBy
from inferd.errors import InvalidRequest
from inferd.http.auth import AdminDep
from inferd.http.deps import PrincipalDep, ServicesDep
from inferd.http.operation import endpoint
from inferd.http.responses import json_response
from inferd.schemas import answers as a

router = APIRouter(tags=["admin"])

BUCKETS = {"minute": 60, "5m": 300, "hour": 3600, "day": 86400}
Bucket = Literal["minute", "5m", "hour", "day"]
# Finite times only: NaN and infinity name no bucket (and were once a 500).
From = Annotated[float | None, Query(alias="from", description="epoch seconds",
                                     allow_inf_nan=False)]
To = Annotated[float | None, Query(alias="to", description="epoch seconds", allow_inf_nan=False)]


async def _series(services: ServicesDep, *, bucket: Bucket, since: float | None,
                  until: float | None, split_by: SplitBy, model: str | None,
                  key_id: str | None) -> Response:
    now = time.time()
    until = now if until is None else until
    since = until - 3600 if since is None else since
    if since >= until:
        raise InvalidRequest("'from' must be earlier than 'to'.", param="from",
                             code="invalid_value")
    seconds = BUCKETS[bucket]
    if (until - since) / seconds > MAX_BUCKETS:
        raise InvalidRequest(f"That range has more than {MAX_BUCKETS} '{bucket}' buckets; "
                             "pick a larger bucket or a shorter range.", param="bucket",
                             code="invalid_value")
    await services.metering.recorder.flush()  # with the requests still in the buffer
    series = await services.control.usage_series.series(
        bucket=seconds, since=since, until=until, split_by=split_by, model=model, key_id=key_id)
    return json_response({"object": "usage.series", "bucket": bucket,
                          "bucket_seconds": seconds, "from": since, "to": until,
                          "split_by": split_by, "generated_at": now,
                          "series": [{"name": n, "data": d} for n, d in series.items()]})


@endpoint(router, "GET", "/admin/v1/usage/series", access="audit", answer=a.UsageSeries,
          errors=(503,))
async def admin_series(services: ServicesDep, _admin: AdminDep, bucket: Bucket = "minute",
                       since: From = None, until: To = None, split_by: SplitBy = "model",
                       model: str | None = None,
                       key: Annotated[str | None, Query(description="a key id")] = None,
                       ) -> Response:
    """Requests, errors, tokens and p50/p95 latency and TTFT per bucket, one series per
    model (``split_by=model``), per key (``key``) or one in all (``none``)."""
    return await _series(services, bucket=bucket, since=since, until=until,
                         split_by=split_by, model=model, key_id=key)


# the calling key's own usage
@endpoint(router, "GET", "/v1/usage/series", access="key", answer=a.UsageSeries, errors=(503,))
async def own_series(services: ServicesDep, principal: PrincipalDep, bucket: Bucket = "minute",
                     since: From = None, until: To = None, split_by: SplitBy = "model",
                     model: str | None = None) -> Response:
    """The same series for the calling key's own requests only."""
    return await _series(services, bucket=bucket, since=since, until=until,
                         split_by=split_by, model=model, key_id=_own(principal))


def _own(principal: Principal) -> str:
    if principal.key_id is None:
        # The open-mode caller (keys off) has no requests of its own to single out.
        raise InvalidRequest("This endpoint charts the calling key's usage; send an API key.",
                             code="missing_api_key")
    return principal.key_id
