"""The OpenAPI document: request bodies from the real pydantic request models, and the
statuses inferd sends (400 in the OpenAI error shape, never FastAPI's 422; 202 for the
requests that may become jobs).

The OpenAI routes read their bodies themselves (to answer errors in OpenAI's shape, and fast),
so FastAPI cannot see them; this table tells the document what each one takes.
"""

from __future__ import annotations

from copy import deepcopy
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from inferd.schemas.images import ImageGenerationRequest
from inferd.schemas.openai import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from inferd.schemas.rerank import RerankRequest, ScoreRequest
from inferd.schemas.responses import ResponseCreateRequest

REF = "#/components/schemas/{model}"
# path -> (request model, whether ``Prefer: respond-async`` makes it a 202 job)
BODIES: dict[str, tuple[type[BaseModel], bool]] = {
    "/v1/chat/completions": (ChatCompletionRequest, True),
    "/v1/completions": (CompletionRequest, True),
    "/v1/embeddings": (EmbeddingRequest, True),
    "/v1/images/generations": (ImageGenerationRequest, False),
    "/v1/responses": (ResponseCreateRequest, False),
    "/v1/rerank": (RerankRequest, False),
    "/v1/score": (ScoreRequest, False),
}
ERRORS = {"400": "Invalid request (the field is named in `error.param`)",
          "401": "Missing or invalid API key", "403": "The key may not use this model",
          "404": "Unknown model or object", "429": "Rate limit or token budget exceeded"}
ERROR_SCHEMA = {
    "type": "object", "required": ["error"], "title": "ErrorResponse",
    "properties": {"error": {"type": "object", "required": ["message", "type"], "properties": {
        "message": {"type": "string"}, "type": {"type": "string"},
        "param": {"type": ["string", "null"]}, "code": {"type": ["string", "null"]}}}}}
ERROR_REF = {"$ref": "#/components/schemas/ErrorResponse"}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ERROR_REF}}}


def _add_body(doc: dict[str, Any], operation: dict[str, Any], model: type[BaseModel],
              async_job: bool) -> None:
    schema = model.model_json_schema(ref_template=REF, mode="validation")
    components = doc.setdefault("components", {}).setdefault("schemas", {})
    components.update(schema.pop("$defs", {}))
    components[model.__name__] = schema
    operation["requestBody"] = {"required": True, "content": {"application/json": {
        "schema": {"$ref": REF.format(model=model.__name__)}}}}
    responses = operation.setdefault("responses", {})
    for status, description in ERRORS.items():
        responses.setdefault(status, _error(description))
    if async_job:
        operation.setdefault("parameters", []).append({
            "name": "Prefer", "in": "header", "required": False,
            "schema": {"type": "string", "enum": ["respond-async"]},
            "description": "`respond-async`: accept the request as a durable job (202)."})
        responses["202"] = {"description": "Accepted as a job: poll `/v1/jobs/{id}`",
                            "content": {"application/json": {"schema": {"type": "object"}}}}


def build(app: FastAPI) -> dict[str, Any]:
    doc = get_openapi(title=app.title, version=app.version, routes=app.routes)
    doc.setdefault("components", {}).setdefault("schemas", {})["ErrorResponse"] = ERROR_SCHEMA
    for path, item in doc.get("paths", {}).items():
        for method, operation in item.items():
            responses = operation.get("responses", {})
            if responses.pop("422", None) is not None:  # validation errors are sent as 400
                responses.setdefault("400", _error(ERRORS["400"]))
            if path in BODIES and method == "post":
                _add_body(doc, operation, *BODIES[path])
    for schema in ("HTTPValidationError", "ValidationError"):
        doc["components"]["schemas"].pop(schema, None)
    chat = doc.get("paths", {}).get("/v1/chat/completions")
    if chat is not None:  # S3's clients post to the root: the same operation
        alias = deepcopy(chat)
        for operation in alias.values():
            operation["operationId"] = operation.get("operationId", "chat") + "_root"
        doc["paths"]["/chat/completions"] = alias
    return doc


def install_openapi(app: FastAPI) -> None:
    """Make ``app.openapi()`` (and ``/openapi.json``) return the document above, built once."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
