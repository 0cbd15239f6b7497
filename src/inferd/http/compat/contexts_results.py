"""The contexts-and-results API ("LLM API Service"): stored prompts and their results, on the
job system.

``POST /models/send/{model}/{context_id}`` returns a result id at once; the result is a job whose
status reads ``pending`` until it is ``completed`` or ``failed``.
"""

from __future__ import annotations

from typing import TypedDict

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict
from starlette.responses import Response

from inferd.auth.principal import Principal
from inferd.control import ContextRecord, JobRecord
from inferd.errors import NotFound
from inferd.http.compat import result_text
from inferd.http.deps import ContextId, PrincipalDep, ServicesDep, read_strict
from inferd.http.jobs import JobsDep
from inferd.http.operation import endpoint
from inferd.http.responses import json_response
from inferd.jsontypes import JsonObject
from inferd.schemas import compat

router = APIRouter(tags=["contexts-results"])

SOURCE = "contexts"  # the source of the jobs this API starts (its results)

_STATUS = {"pending": "pending", "running": "pending", "completed": "completed",
           "failed": "failed", "cancelled": "failed"}


class ContextCreate(BaseModel):
    """``POST /contexts/``."""

    model_config = ConfigDict(extra="ignore")
    content: str


class ContextObject(TypedDict):
    """A context as the contexts-and-results API shows it."""

    id: int
    content: str
    created_at: int


class ResultObject(TypedDict):
    """A result (the job that answers a context) as the contexts-and-results API shows it."""

    id: str
    result_id: str
    context_id: int | None
    model: str
    status: str
    content: str | None
    error: str | None
    created_at: int
    finished_at: int | None


def context_object(context: ContextRecord) -> ContextObject:
    return {"id": context.id, "content": context.content,
            "created_at": int(context.created_at)}


def result_object(job: JobRecord) -> ResultObject:
    error = (job.error.get("message") if job.error and job.status in ("failed", "cancelled")
             else None)
    return {"id": job.id, "result_id": job.id, "context_id": (job.meta or {}).get("context_id"),
            "model": job.model, "status": _STATUS[job.status], "content": result_text(job),
            "error": error, "created_at": int(job.created_at),
            "finished_at": None if job.finished_at is None else int(job.finished_at)}


async def _context(services: ServicesDep, principal: Principal, context_id: int) -> ContextRecord:
    context = await services.control.contexts.get(context_id)
    if context is None or not (principal.is_admin or context.owner == principal.key_id):
        raise NotFound(f"Context {context_id} not found.", param="context_id")
    return context


@endpoint(router, "POST", "/contexts/", access="key", answer=compat.Context, body=ContextCreate,
          errors=(413, 503))
async def create_context(request: Request, services: ServicesDep,
                         principal: PrincipalDep) -> Response:
    body = await read_strict(request, ContextCreate)
    context = await services.control.contexts.create(principal.key_id, body.content,
                                                     principal.storage_quota)
    return json_response(context_object(context))


@endpoint(router, "GET", "/contexts/", access="owner", answer=compat.Context, many=True,
          errors=(503,))
async def list_contexts(services: ServicesDep, principal: PrincipalDep) -> Response:
    contexts = await services.control.contexts.all(principal.key_id, principal.is_admin)
    return json_response([context_object(c) for c in contexts])


@endpoint(router, "GET", "/contexts/{context_id}", access="owner", answer=compat.Context,
          errors=(404, 503))
async def get_context(context_id: ContextId, services: ServicesDep,
                      principal: PrincipalDep) -> Response:
    return json_response(context_object(await _context(services, principal, context_id)))


@endpoint(router, "GET", "/results/", access="owner", answer=compat.ContextResult, many=True,
          errors=(503,))
async def list_results(jobs: JobsDep, principal: PrincipalDep) -> Response:
    found: list[JobRecord] = []
    after = None
    while True:
        page = await jobs.page(principal, source=SOURCE, after=after, limit=100)
        found += page.jobs
        if not page.has_more or not page.jobs:
            break
        after = page.jobs[-1].id
    return json_response([result_object(j) for j in reversed(found)])


@endpoint(router, "GET", "/results/{result_id}", access="owner", answer=compat.ContextResult,
          errors=(404, 503))
async def get_result(result_id: str, jobs: JobsDep, principal: PrincipalDep) -> Response:
    job = await jobs.get(principal, result_id)
    if job.source != SOURCE:
        raise NotFound(f"Result {result_id} not found.", param="result_id")
    return json_response(result_object(job))


@endpoint(router, "GET", "/models/", access="key", answer=compat.RepositoryModel, many=True)
async def list_models(services: ServicesDep, principal: PrincipalDep) -> Response:
    """The served models the caller's key may use, as the contexts-and-results API listed
    Triton's repository index."""
    return json_response([{"name": m.name, "version": "1",
                           "state": "READY" if m.kind != "none" else "UNAVAILABLE"}
                          for m in services.inference.visible_models(principal)])


@endpoint(router, "POST", "/models/send/{model_name}/{context_id}", access="owner",
          answer=compat.ContextResult, status=202, errors=(403, 404, 503))
async def send(model_name: str, context_id: ContextId, services: ServicesDep, jobs: JobsDep,
               principal: PrincipalDep) -> Response:
    context = await _context(services, principal, context_id)
    body: JsonObject = {"model": model_name,
                        "messages": [{"role": "user", "content": context.content}]}
    job, _ = await jobs.submit(principal, "/v1/chat/completions", body, source=SOURCE,
                               meta={"context_id": context.id})
    return json_response(result_object(job), status=202)
