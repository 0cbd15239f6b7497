"""What a job runs: its endpoint, the request model of that endpoint, and the job's API shape."""

from __future__ import annotations

import hashlib
from typing import TypedDict

import orjson
from pydantic import BaseModel

from inferd.errors import ErrorObject, InvalidRequest
from inferd.ids import unix_seconds
from inferd.jsontypes import JsonObject
from inferd.outbound import HostAllowList
from inferd.responses import RESPONSES
from inferd.schemas.images import ImageGenerationRequest
from inferd.schemas.openai import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from inferd.store.jobs import JobRecord

ENDPOINTS: dict[str, type[BaseModel]] = {
    "/v1/chat/completions": ChatCompletionRequest,
    "/v1/completions": CompletionRequest,
    "/v1/embeddings": EmbeddingRequest,
    "/v1/images/generations": ImageGenerationRequest,
}


# What the Batch API runs besides ``ENDPOINTS``: Responses and Anthropic Messages requests,
# each line answered in its own API's shape (``inferd.jobs.runner``).
MESSAGES = "/v1/messages"
BATCH_ENDPOINTS = (*ENDPOINTS, RESPONSES, MESSAGES)


def check_endpoint(endpoint: str, param: str = "endpoint") -> type[BaseModel]:
    try:
        return ENDPOINTS[endpoint]
    except KeyError:
        raise InvalidRequest(f"Unsupported endpoint '{endpoint}'. Use one of "
                             f"{', '.join(ENDPOINTS)}.", param=param,
                             code="invalid_endpoint") from None


def parse_request(endpoint: str, body: JsonObject, internal: bool = False) -> BaseModel:
    """Validate ``body`` for ``endpoint`` (pydantic's ``ValidationError`` names the field).

    ``internal`` admits the endpoints only inferd itself submits (background responses).
    """
    if internal and endpoint == RESPONSES:
        from inferd.responses.background import ResponseJob

        return ResponseJob.model_validate(body)
    return check_endpoint(endpoint).model_validate(body)


def request_hash(endpoint: str, body: JsonObject) -> str:
    """Identifies "the same request" for idempotency: key order does not matter."""
    return hashlib.sha256(orjson.dumps([endpoint, body], option=orjson.OPT_SORT_KEYS)).hexdigest()


def idempotency_scope(owner: str | None, key: str) -> str:
    """Keys are per owner: two users may use the same key."""
    return hashlib.sha256(f"{owner or ''}\0{key}".encode()).hexdigest()


async def check_webhook_url(url: str | None, allow: HostAllowList) -> str | None:
    """``url`` when a webhook may be sent there (see ``inferd.outbound``); else a 400."""
    if url is not None:
        await allow.check(url)
    return url


class JobObject(TypedDict):
    """A job as the API shows it."""

    id: str
    object: str
    endpoint: str
    model: str
    status: str
    priority: int
    created_at: int
    started_at: int | None
    finished_at: int | None
    deadline_at: int | None
    attempts: int
    request: JsonObject
    result: JsonObject | None
    error: ErrorObject | None
    usage: JsonObject | None
    webhook_url: str | None
    webhook_status: str | None
    metadata: dict[str, str] | None
    batch_id: str | None
    custom_id: str | None
    owner: str | None


def job_object(job: JobRecord) -> JobObject:
    """A job as the API shows it."""
    meta = job.meta or {}
    return {
        "id": job.id, "object": "job", "endpoint": job.endpoint, "model": job.model,
        "status": job.status, "priority": job.priority, "created_at": unix_seconds(job.created_at),
        "started_at": unix_seconds(job.started_at), "finished_at": unix_seconds(job.finished_at),
        "deadline_at": unix_seconds(job.deadline_at), "attempts": job.attempts,
        "request": job.request, "result": job.result, "error": job.error,
        "usage": job.usage, "webhook_url": job.webhook_url,
        "webhook_status": job.webhook_state, "metadata": meta.get("metadata"),
        "batch_id": job.batch_id, "custom_id": job.custom_id,
        "owner": job.owner,  # the id of the key that submitted it (the UI names it)
    }
