"""The queued generate API ("protollm"): ``/generate`` and ``/chat_completion`` on the
job system.

The request is queued as a job (``job_id`` is its idempotency key, so a resubmit returns the
same job) and the answer ``{"content": ...}`` is sent once the job has finished.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from inferd.auth.principal import Principal
from inferd.http.compat import chat_model, result_text, token_limit
from inferd.http.deps import PrincipalDep, read_strict
from inferd.http.errors import error_response
from inferd.http.jobs import JobsDep
from inferd.http.operation import UPSTREAM, endpoint
from inferd.http.responses import json_response
from inferd.jobs.service import JobService
from inferd.jsontypes import JsonObject, JsonValue
from inferd.schemas import compat

SOURCE = "queued"  # the source of the jobs this API starts

router = APIRouter(tags=["queued-generate"])


class QueuedMeta(BaseModel):
    """Generation settings of a queued generate request."""

    model_config = ConfigDict(extra="ignore")
    temperature: float = Field(default=0.2, ge=0.0, le=2.0)
    tokens_limit: int = Field(default=8096, ge=1)
    stop_words: list[str] | None = None
    model: str | None = None


class QueuedMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: str
    content: str


class QueuedGenerate(BaseModel):
    """``POST /generate``."""

    model_config = ConfigDict(extra="ignore")
    job_id: str = Field(min_length=1, max_length=255)
    meta: QueuedMeta = Field(default_factory=QueuedMeta)
    content: str


class QueuedChat(BaseModel):
    """``POST /chat_completion``."""

    model_config = ConfigDict(extra="ignore")
    job_id: str = Field(min_length=1, max_length=255)
    meta: QueuedMeta = Field(default_factory=QueuedMeta)
    messages: list[QueuedMessage] = Field(min_length=1)


async def _run(jobs: JobService, principal: Principal, job_id: str, meta: QueuedMeta,
               messages: list[JsonValue]) -> Response:
    model = chat_model(jobs.inference, meta.model, principal)
    body: JsonObject = {"model": model, "messages": messages, "temperature": meta.temperature}
    limit = token_limit(jobs.router, model, meta.tokens_limit)
    if limit is not None:
        body["max_tokens"] = limit
    stops = [s for s in meta.stop_words or [] if s][:4]
    if stops:
        body["stop"] = [*stops]
    job, _ = await jobs.submit(principal, "/v1/chat/completions", body, idempotency_key=job_id,
                               source=SOURCE)
    job = await jobs.wait(principal, job.id)
    if job.status != "completed":
        error = job.error
        return error_response(job.status_code or 500,
                              str((error.get("message") if error else None) or job.status),
                              type=error.get("type") if error else None,
                              code=error.get("code") if error else None)
    return json_response({"content": result_text(job)})


# ``job_id`` is scoped to the calling key; a failed job answers its own failure status
@endpoint(router, "POST", "/generate", access="key", answer=compat.GeneratedContent,
          body=QueuedGenerate, errors=(403, 404, 408, 409, 413, *UPSTREAM))
async def generate(request: Request, jobs: JobsDep, principal: PrincipalDep) -> Response:
    body = await read_strict(request, QueuedGenerate)
    return await _run(jobs, principal, body.job_id, body.meta,
                      [{"role": "user", "content": body.content}])


@endpoint(router, "POST", "/chat_completion", access="key", answer=compat.GeneratedContent,
          body=QueuedChat, errors=(403, 404, 408, 409, 413, *UPSTREAM))
async def chat_completion(request: Request, jobs: JobsDep, principal: PrincipalDep) -> Response:
    body = await read_strict(request, QueuedChat)
    messages: list[JsonValue] = [
        {"role": m.role if m.role in ("system", "user", "assistant") else "user",
         "content": m.content} for m in body.messages]
    return await _run(jobs, principal, body.job_id, body.meta, messages)
