"""``/v1/jobs``: submit any chat, completion or embedding request as a durable job, follow it
(poll or server-sent events), cancel or delete it; ``Prefer: respond-async`` on the normal
endpoints lands here too.

Submissions, the hot path of a gateway taking async work, are answered by ``answer`` (pure
ASGI, see ``inferd.http.fast``): ``POST /v1/jobs`` and every ``Prefer: respond-async``
request. The routes for them stay the documented ones (OpenAPI) and answer through ``answer``
too.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Query, Request
from pydantic import BaseModel, ConfigDict, Field, GetCoreSchemaHandler
from pydantic_core import CoreSchema, core_schema
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from inferd.auth.principal import Principal
from inferd.control import JobRecord
from inferd.errors import InvalidRequest, PermissionDenied
from inferd.http.deps import PrincipalDep, get_services
from inferd.http.fast import Answered, header, principal_of, send_error, send_json
from inferd.http.operation import SSE, endpoint
from inferd.http.responses import json_response, page_response
from inferd.http.sse import sse_response
from inferd.images import ENDPOINT as IMAGES_ENDPOINT
from inferd.jobs.requests import job_object
from inferd.jobs.service import JobService, SSEvent
from inferd.json_bodies import parse_json
from inferd.jsontypes import JsonObject
from inferd.numerals import ascii_int
from inferd.schemas import answers as a
from inferd.schemas.openai import MAX_DURATION
from inferd.services import Services

router = APIRouter(tags=["jobs"])

PATH = "/v1/jobs"
# The paths whose ``Prefer: respond-async`` requests become jobs, and the job endpoint of each.
ASYNC_PATHS = {"/v1/chat/completions": "/v1/chat/completions",
               "/chat/completions": "/v1/chat/completions",  # the proxy toolkit's path
               "/v1/completions": "/v1/completions", "/v1/embeddings": "/v1/embeddings",
               IMAGES_ENDPOINT: IMAGES_ENDPOINT}

class _ParsedObject:
    """Validates a JSON object of a parsed request body: an object, its values JSON already
    (they were parsed from its text); documented as any object."""

    def __get_pydantic_core_schema__(self, source: object,
                                     handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.dict_schema(core_schema.str_schema(), core_schema.any_schema())


# A JSON object a request carries as it is (a job's body, a batch's metadata).
AnyObject = Annotated[JsonObject, _ParsedObject()]

Status = Literal["pending", "running", "completed", "failed", "cancelled"]


def get_jobs(services: Annotated[Services, Depends(get_services)]) -> JobService:
    return services.jobs


JobsDep = Annotated[JobService, Depends(get_jobs)]


class JobCreate(BaseModel):
    """``POST /v1/jobs``: an endpoint, its usual body, and how to run it."""

    model_config = ConfigDict(extra="forbid")
    endpoint: str = Field(min_length=1)
    body: AnyObject
    priority: int = Field(default=0, ge=-1000, le=1000)
    deadline_seconds: float | None = Field(default=None, gt=0, le=MAX_DURATION,
                                           allow_inf_nan=False)
    webhook_url: str | None = Field(default=None, max_length=2048)
    metadata: dict[str, str] | None = None


def idempotency_key(value: str | None) -> str | None:
    if value is not None and not 1 <= len(value) <= 255:
        raise InvalidRequest("Idempotency-Key must be 1 to 255 characters.",
                             param="Idempotency-Key")
    return value


IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key")]


async def send_accepted(send: Send, job: JobRecord, created: bool) -> None:
    """202 for a new job, 200 for the existing job of a repeated idempotency key."""
    await send_json(send, job_object(job), 202 if created else 200,
                    [(b"location", f"/v1/jobs/{job.id}".encode()),
                     (b"preference-applied", b"respond-async")])


def respond_async(prefer: str) -> bool:
    """Whether a ``Prefer`` header value asks for ``respond-async`` (RFC 7240: a comma-
    separated list of preferences, each with optional ``;`` parameters)."""
    return any(p.split(";")[0].strip().lower() == "respond-async" for p in prefer.split(","))


def wants_async(scope: Scope) -> bool:
    """True when the request carries ``Prefer: respond-async``."""
    return any(name == b"prefer" and respond_async(value.decode("latin-1"))
               for name, value in scope["headers"])


def json_object(raw: bytes) -> JsonObject:
    """The body of a request that becomes a job (stored: the rules of ``read_strict``)."""
    body = parse_json(raw, unique_keys=True)
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    return body


async def create(jobs: JobService, principal: Principal, raw: bytes,
                 key: str | None) -> tuple[JobRecord, bool]:
    """``POST /v1/jobs`` with body ``raw`` and ``Idempotency-Key`` ``key``: ``(job, created)``."""
    # read_strict's rules: inferd.json_bodies first, then the model
    spec = JobCreate.model_validate(parse_json(raw, unique_keys=True))
    deadline = None if spec.deadline_seconds is None else time.time() + spec.deadline_seconds
    return await jobs.submit(principal, spec.endpoint, spec.body, priority=spec.priority,
                             deadline_at=deadline, webhook_url=spec.webhook_url,
                             metadata=spec.metadata, idempotency_key=idempotency_key(key))


async def submit_request(jobs: JobService, principal: Principal, endpoint: str, raw: bytes,
                         key: str | None) -> tuple[JobRecord, bool]:
    """A ``Prefer: respond-async`` request to ``endpoint``, as a job: ``(job, created)``."""
    key = idempotency_key(key)
    return await jobs.submit(principal, endpoint, json_object(raw), idempotency_key=key)


@endpoint(router, "POST", PATH, access="key", answer=a.Job, status=202, body=JobCreate,
          also={200: a.Job}, errors=(403, 404, 409, 413, 503))
async def create_job(request: Request, key: IdempotencyKey = None) -> Response:
    return Answered(answer)  # ``key``: the header, as documented (``answer`` reads it)


async def answer(scope: Scope, body: bytes, receive: Receive, send: Send) -> None:
    """A job submission with ``body``: ``POST /v1/jobs``, or a ``Prefer: respond-async``
    request to one of ``ASYNC_PATHS``."""
    jobs = get_jobs(scope["app"].state.services)
    key = header(scope, b"idempotency-key")
    path = scope["path"]
    try:
        principal = principal_of(scope)
        if path == PATH:
            job, created = await create(jobs, principal, body, key)
        else:
            job, created = await submit_request(jobs, principal, ASYNC_PATHS[path], body, key)
    except Exception as exc:  # nothing sent yet: answer in the OpenAI error shape
        await send_error(scope, receive, send, exc)
        return
    await send_accepted(send, job, created)


@endpoint(router, "GET", "/v1/jobs", access="owner", answer=a.JobList, errors=(503,))
async def list_jobs(jobs: JobsDep, principal: PrincipalDep, status: Status | None = None,
                    model: str | None = None, after: str | None = None,
                    limit: Annotated[int, Query(ge=1, le=100)] = 20) -> Response:
    page = await jobs.page(principal, status=status, model=model, after=after, limit=limit)
    data = [job_object(j) for j in page.jobs]
    return page_response(data, page.has_more)


@endpoint(router, "GET", "/v1/jobs/{job_id}", access="owner", answer=a.Job, errors=(404, 503))
async def retrieve_job(job_id: str, jobs: JobsDep, principal: PrincipalDep) -> Response:
    return json_response(job_object(await jobs.get(principal, job_id)))


@endpoint(router, "POST", "/v1/jobs/{job_id}/cancel", access="owner", answer=a.Job,
          errors=(404, 409, 503))
async def cancel_job(job_id: str, jobs: JobsDep, principal: PrincipalDep) -> Response:
    return json_response(job_object(await jobs.cancel(principal, job_id)))


@endpoint(router, "DELETE", "/v1/jobs/{job_id}", access="owner", answer=a.Deleted,
          errors=(404, 409, 503))
async def delete_job(job_id: str, jobs: JobsDep, principal: PrincipalDep) -> Response:
    await jobs.delete(principal, job_id)
    return json_response({"id": job_id, "object": "job.deleted", "deleted": True})


@endpoint(router, "GET", "/v1/jobs/{job_id}/webhook_attempts", access="owner",
          answer=a.WebhookAttempts, errors=(404, 503))
async def webhook_attempts(job_id: str, jobs: JobsDep, principal: PrincipalDep) -> Response:
    await jobs.get(principal, job_id)
    attempts = jobs.webhooks.describe(await jobs.store.attempts(job_id))
    return json_response({"object": "list", "data": attempts})


# the calling key's own secret
@endpoint(router, "GET", "/v1/webhooks/secret", access="key", answer=a.WebhookSecret,
          errors=(403, 503))
async def webhook_secret(jobs: JobsDep, principal: PrincipalDep) -> Response:
    """The secret that signs the caller's webhooks: its key's own, else (admins only) the
    installation's."""
    if principal.webhook_secret:
        return json_response({"object": "webhook_secret", "secret": principal.webhook_secret,
                              "scope": "key"})
    if not principal.is_admin:
        raise PermissionDenied("Your key has no webhook secret of its own; ask an admin.")
    return json_response({"object": "webhook_secret", "scope": "installation",
                          "secret": await jobs.webhooks.installation_secret()})


def _last_event_id(header: str | None, query: int | None) -> int:
    if query is not None:
        return query
    if header is None or header == "":
        return 0
    event_id = ascii_int(header)
    if event_id is None:
        raise InvalidRequest("Last-Event-ID must be an event id of this stream.",
                             param="Last-Event-ID")
    return event_id


async def _frames(events: AsyncIterator[SSEvent]) -> AsyncIterator[bytes]:
    yield b"retry: 1000\n\n"
    async for seq, kind, data in events:
        head = b"" if seq is None else f"id: {seq}\n".encode()
        yield head + f"event: {kind}\ndata: ".encode() + data.encode() + b"\n\n"


@endpoint(router, "GET", "/v1/jobs/{job_id}/events", access="owner", media=(SSE,),
          errors=(404, 503))
async def job_events(job_id: str, jobs: JobsDep, principal: PrincipalDep,
                     last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
                     after: Annotated[int | None, Query(ge=0)] = None) -> Response:
    start = _last_event_id(last_event_id, after)
    await jobs.get(principal, job_id)  # 404 before the stream starts
    return sse_response(_frames(jobs.events(principal, job_id, start)))
