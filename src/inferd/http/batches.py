"""``/v1/batches``: the OpenAI Batch API, run on the job system."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from inferd.http.deps import PrincipalDep, read_strict
from inferd.http.jobs import AnyObject, JobsDep
from inferd.http.operation import endpoint
from inferd.http.responses import json_response, page_response
from inferd.schemas import answers as a

router = APIRouter(tags=["batch"])


class BatchCreate(BaseModel):
    """``POST /v1/batches``."""

    model_config = ConfigDict(extra="allow")
    input_file_id: str = Field(min_length=1)
    endpoint: str = Field(min_length=1)
    completion_window: str = "24h"
    metadata: AnyObject | None = None


# ``owner``: from the caller's own input file
@endpoint(router, "POST", "/v1/batches", access="owner", answer=a.Batch, body=BatchCreate,
          errors=(403, 404, 413, 503))
async def create_batch(request: Request, jobs: JobsDep, principal: PrincipalDep) -> Response:
    spec = await read_strict(request, BatchCreate)
    batch = await jobs.batches.create(principal, spec.input_file_id, spec.endpoint,
                                      spec.completion_window, spec.metadata)
    return json_response(await jobs.batches.batch_object(batch))


@endpoint(router, "GET", "/v1/batches", access="owner", answer=a.BatchList, errors=(503,))
async def list_batches(jobs: JobsDep, principal: PrincipalDep, after: str | None = None,
                       limit: Annotated[int, Query(ge=1, le=100)] = 20) -> Response:
    records, has_more = await jobs.batches.store.page(
        owner=principal.key_id, all_owners=principal.is_admin, after=after, limit=limit)
    data = [await jobs.batches.batch_object(b) for b in records]
    return page_response(data, has_more)


@endpoint(router, "GET", "/v1/batches/{batch_id}", access="owner", answer=a.Batch,
          errors=(404, 503))
async def retrieve_batch(batch_id: str, jobs: JobsDep, principal: PrincipalDep) -> Response:
    batch = await jobs.batches.get(principal, batch_id)
    return json_response(await jobs.batches.batch_object(batch))


@endpoint(router, "POST", "/v1/batches/{batch_id}/cancel", access="owner", answer=a.Batch,
          errors=(404, 409, 503))
async def cancel_batch(batch_id: str, jobs: JobsDep, principal: PrincipalDep) -> Response:
    batch = await jobs.batches.cancel(principal, batch_id)
    return json_response(await jobs.batches.batch_object(batch))
