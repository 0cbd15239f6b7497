"""``/admin/v1/prompts``: prompt templates for Responses' ``prompt`` (admin scope): create,
list, read, add a version, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from starlette.responses import Response

from inferd.http.auth import AdminDep
from inferd.http.deps import PrincipalDep, ServicesDep, read_strict
from inferd.http.operation import endpoint
from inferd.http.responses import json_response
from inferd.responses.prompts import PromptService
from inferd.schemas import answers as a
from inferd.schemas import answers_control as c
from inferd.schemas.responses import PromptCreate, PromptTemplate

router = APIRouter(prefix="/admin/v1/prompts", tags=["admin"])


def _prompts(services: ServicesDep, _admin: AdminDep) -> PromptService:
    return services.control.prompts


PromptsDep = Annotated[PromptService, Depends(_prompts)]
PromptId = Annotated[str, Path(min_length=1, max_length=64)]


@endpoint(router, "POST", "", access="admin", answer=c.Prompt, status=201, body=PromptCreate,
          errors=(404, 413, 503))
async def create_prompt(request: Request, principal: PrincipalDep, services: ServicesDep,
                        prompts: PromptsDep) -> Response:
    """A prompt and its version 1, for ``key_id`` (by default the calling admin key)."""
    body = await read_strict(request, PromptCreate)
    if body.key_id is not None:
        await services.auth.admin.get(body.key_id)  # 404 for a key that does not exist
    return json_response(await prompts.create(principal, body), status=201)


@endpoint(router, "GET", "", access="audit", answer=c.PromptList, errors=(503,))
async def list_prompts(prompts: PromptsDep,
                       limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> Response:
    return json_response(await prompts.list_prompts(limit))


@endpoint(router, "GET", "/{prompt_id}", access="audit", answer=c.Prompt, errors=(404, 503))
async def get_prompt(prompt_id: PromptId, prompts: PromptsDep) -> Response:
    return json_response(await prompts.retrieve(prompt_id))


@endpoint(router, "POST", "/{prompt_id}/versions", access="admin", answer=c.Prompt, status=201,
          body=PromptTemplate, errors=(404, 413, 503))
async def add_prompt_version(prompt_id: PromptId, request: Request,
                             prompts: PromptsDep) -> Response:
    """A new version (the latest from now on; the earlier ones stay usable by number)."""
    body = await read_strict(request, PromptTemplate)
    return json_response(await prompts.add_version(prompt_id, body), status=201)


@endpoint(router, "DELETE", "/{prompt_id}", access="admin", answer=a.Deleted, errors=(404, 503))
async def delete_prompt(prompt_id: PromptId, prompts: PromptsDep) -> Response:
    return json_response(await prompts.delete(prompt_id))
