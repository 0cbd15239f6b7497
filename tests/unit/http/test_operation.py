"""One declaration per operation: the routes, the access policy and the OpenAPI document all
come from the ``@endpoint`` declarations (``inferd.http.operation``)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI
from pydantic import BaseModel
from starlette.responses import Response

from inferd.app import create_app
from inferd.http.access import POLICY, policy_table, public_paths
from inferd.http.openapi import install_openapi
from inferd.http.operation import INFER, Registry, endpoint
from inferd.http.routes import declared
from inferd.jobs.requests import ENDPOINTS
from inferd.schemas.openai import ChatCompletionRequest
from inferd.settings import Settings


def _served(app: FastAPI) -> list[tuple[str, str]]:
    """Every (method, path) the app routes, once per route (included routers opened)."""
    found: list[tuple[str, str]] = []
    for entry in app.routes:
        included = getattr(entry, "effective_route_contexts", None)
        for route in included() if included is not None else [entry]:
            found += [(method, route.path) for method in getattr(route, "methods", None) or ()
                      if method != "HEAD"]
    return found


def test_every_route_of_the_app_is_declared_exactly_once_and_every_declaration_routed() -> None:
    served = Counter(_served(create_app(Settings(bundled_models=False))))
    assert [route for route, count in served.items() if count > 1] == []
    assert set(served) == set(declared().operations)
    assert set(POLICY) == set(served)


def test_the_jobs_endpoints_are_the_declarations_that_may_run_as_jobs() -> None:
    jobs = {op.path: op.body for op in declared() if op.job}
    for path, model in ENDPOINTS.items():
        assert jobs.get(path) is model, path
    assert set(jobs.values()) <= set(ENDPOINTS.values())


class ToyRequest(BaseModel):
    colour: str


class ToyAnswer(BaseModel):
    id: str
    colour: str


def _toy() -> tuple[FastAPI, Registry]:
    registry = Registry()
    router = APIRouter(prefix="/toys", tags=["toys"])

    @endpoint(router, "POST", "/{toy_id}", access="owner", body=ToyRequest, answer=ToyAnswer,
              status=201, errors=(404, 409), registry=registry)
    async def paint(toy_id: str) -> Response:
        return Response(status_code=201)

    @endpoint(router, "GET", "/health", access="public", answer=ToyAnswer, registry=registry)
    async def health() -> Response:
        return Response()

    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)  # the toy routes only
    app.include_router(router)
    install_openapi(app, registry)
    return app, registry


def test_a_declared_endpoint_is_routed_and_is_in_the_policy_and_the_document() -> None:
    app, registry = _toy()
    assert set(_served(app)) == {("POST", "/toys/{toy_id}"), ("GET", "/toys/health")}
    table = policy_table(registry)
    assert "| `owner` |" in table and "`POST /toys/{toy_id}`" in table.split("| `owner` |")[1]
    assert "`GET /toys/health`" in table.split("| `public` |")[1].split("\n")[0]
    assert public_paths(registry) == (frozenset({"/toys/health"}), ())

    document: dict[str, Any] = app.openapi()
    paint = document["paths"]["/toys/{toy_id}"]["post"]
    assert paint["x-inferd-access"] == "owner"
    assert paint["security"] == document["security"]
    assert paint["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ToyRequest"}
    created = paint["responses"]["201"]["content"]["application/json"]["schema"]
    assert created == {"$ref": "#/components/schemas/ToyAnswer"}
    assert {"400", "401", "404", "409", "429"} <= set(paint["responses"])
    assert "422" not in paint["responses"]
    assert {"ToyRequest", "ToyAnswer"} <= set(document["components"]["schemas"])
    health = document["paths"]["/toys/health"]["get"]
    assert health["security"] == [] and "401" not in health["responses"]


def test_a_route_cannot_be_declared_twice_nor_run_as_a_job_of_no_job_endpoint() -> None:
    registry = Registry()
    router = APIRouter()

    async def handler() -> Response:
        return Response()

    endpoint(router, "GET", "/once", access="key", registry=registry)(handler)
    with pytest.raises(ValueError, match="declared twice"):
        endpoint(router, "GET", "/once", access="key", registry=registry)(handler)
    with pytest.raises(ValueError, match="ENDPOINTS"):
        endpoint(router, "POST", "/toy-job", access="key", body=ToyRequest, job=True,
                 registry=registry)
    endpoint(router, "POST", "/chat", access="key", body=ChatCompletionRequest, job=True,
             errors=INFER, registry=registry)(handler)
    assert registry.operations[("POST", "/chat")].job


def test_a_request_finds_the_operation_it_reaches() -> None:
    registry = declared()
    found = registry.find("GET", "/admin/v1/models/org/model-a")
    assert found is not None and found.path == "/admin/v1/models/{model:path}"
    assert found.access == "audit" and not found.changes
    deleting = registry.find("DELETE", "/models/12")
    assert deleting is not None and deleting.path == "/models/{model_id:int}"
    assert deleting.access == "admin" and deleting.changes
    head = registry.find("HEAD", "/admin/v1/audit")
    assert head is not None and head.method == "GET"
    assert registry.find("PUT", "/admin/v1/audit") is None
    assert registry.find("GET", "/nowhere") is None
    session = registry.find("POST", "/ui/session")
    assert session is not None and not session.changes  # a POST that changes nothing


def test_no_audit_route_changes_state() -> None:
    """``audit`` routes (admin and auditor keys) are reads: an auditor changes nothing. (An
    ``admin`` route may change nothing too, declared ``writes=False``: a dry run.)"""
    for op in declared():
        if op.access == "audit":
            assert not op.changes, op.key
