"""The OpenAPI document: every operation's request body and answers from the real pydantic
models, as each route declares them (``inferd.http.operation``), and the statuses inferd really
sends: errors in the OpenAI shape (the shared ``ErrorResponse``; Anthropic's on
``/v1/messages``), 400 where the framework would say 422, 201 for what is created, 202 for
jobs, streams as ``text/event-stream`` and ``/metrics`` as ``text/plain``.

Its security schemes are the two ways a key is sent (``Authorization: Bearer`` and
``X-API-Key``), so Swagger's "Authorize" button and client generators send keys; each
operation's ``security`` follows its declared access level: none for the public
routes, a key for the others, and a key optional on ``/metrics`` and ``/ready`` (settings may
ask for one there).
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from inferd.http.auth import ADMIN_PREFIXES, KEYED_PROBES
from inferd.http.operation import JSON, LEVELS, MULTIPART, Registry
from inferd.http.operation import Operation as Op
from inferd.http.routes import declared
from inferd.jsontypes import JsonObject, JsonValue
from inferd.schemas.answers import AnthropicError, Job

REF = "#/components/schemas/{model}"
ERRORS = {400: "Invalid request (the field is named in `error.param`)",
          401: "Missing or invalid API key", 403: "The key may not do this",
          404: "Unknown model or object", 408: "The job did not start before its deadline",
          405: "Method not allowed on this path", 409: "Conflicts with the current state",
          413: "The request body is too large",
          429: "Rate limit, token budget or failed-authentication limit exceeded",
          502: "The model's replica failed", 503: "No replica available, or the database is "
          "unreachable (retry)", 504: "The model's replica did not answer in time",
          529: "Overloaded (Anthropic's name for 503)"}
ERROR_SCHEMA: JsonObject = {
    "type": "object", "required": ["error"], "title": "ErrorResponse",
    "properties": {"error": {"type": "object", "required": ["message", "type"], "properties": {
        "message": {"type": "string"}, "type": {"type": "string"},
        "param": {"type": ["string", "null"]}, "code": {"type": ["string", "null"]}}}}}
ERROR_REF: JsonObject = {"$ref": "#/components/schemas/ErrorResponse"}
ANTHROPIC_ERROR_REF: JsonObject = {"$ref": REF.format(model=AnthropicError.__name__)}
SUCCESS = {200: "OK", 201: "Created", 202: "Accepted as a job: follow it at `/v1/jobs/{id}`"}
PREFER: JsonObject = {"name": "Prefer", "in": "header", "required": False,
          "schema": {"type": "string", "enum": ["respond-async"]},
          "description": "`respond-async`: accept the request as a durable job (202)."}


SECURITY_SCHEMES: JsonObject = {
    "bearerAuth": {"type": "http", "scheme": "bearer",
                   "description": "An inferd API key as `Authorization: Bearer KEY`."},
    "apiKeyAuth": {"type": "apiKey", "in": "header", "name": "X-API-Key",
                   "description": "An inferd API key as `X-API-Key: KEY`."},
}
KEYED: list[JsonValue] = [{name: []} for name in SECURITY_SCHEMES]


def _object(value: JsonValue) -> JsonObject:
    """A part of the document that is an object (as the framework builds it)."""
    if not isinstance(value, dict):
        raise TypeError(f"an object of the OpenAPI document, not {value!r}")
    return value


def _security(path: str, operation: JsonObject, op: Op | None) -> None:
    """The operation's ``security`` by its access level; ``x-inferd-access`` names it."""
    if op is None:
        return  # the document's default: a key
    access = op.access
    operation["x-inferd-access"] = access
    if access == "public":
        # a key optional: the empty requirement first
        operation["security"] = [{}, *KEYED] if path in KEYED_PROBES else []
    else:
        operation["security"] = KEYED
    who = LEVELS[access]
    description = operation.get("description", "")
    operation["description"] = f"{description}\n\nAccess: `{access}` ({who}).".lstrip()


Refs = dict[tuple[type[BaseModel], JsonSchemaMode], JsonObject]


def _schemas(doc: JsonObject, ops: dict[tuple[str, str], Op]) -> Refs:
    """Every model of the declared operations in ``components.schemas`` (names made unique by
    pydantic); returns the ``$ref`` of each."""
    wanted: dict[tuple[type[BaseModel], JsonSchemaMode], None] = {
        (AnthropicError, "serialization"): None, (Job, "serialization"): None}
    for op in ops.values():
        if op.body is not None:
            wanted[(op.body, "validation")] = None
        for model in (op.answer, *op.also.values()):
            if model is not None:
                wanted[(model, "serialization")] = None
    refs, defs = models_json_schema(list(wanted), ref_template=REF)
    components = _object(_object(doc.setdefault("components", {})).setdefault("schemas", {}))
    components.update(defs.get("$defs", {}))
    components["ErrorResponse"] = ERROR_SCHEMA
    return {key: refs[key] for key in wanted}


def _error(status: int, op: Op | None) -> JsonObject:
    anthropic = op is not None and op.anthropic and status != 413  # 413 is answered up front
    return {"description": ERRORS.get(status, "Error"), "content": {JSON: {
        "schema": ANTHROPIC_ERROR_REF if anthropic else ERROR_REF}}}


def _answer(op: Op, model: type[BaseModel] | None, refs: Refs) -> JsonObject:
    content: JsonObject = {}
    if model is not None:
        schema = refs[(model, "serialization")]
        content[JSON] = {"schema": {"type": "array", "items": schema} if op.many else schema}
    for media in op.media:
        content[media] = {"schema": {"type": "string"}}
    return content


def _statuses(path: str, operation: JsonObject, op: Op | None) -> list[int]:
    """The error statuses of an operation: those every route shares, then its own."""
    if op is not None and op.access == "public":
        # ``/metrics`` refuses a caller without a valid key under ``metrics_require_key``
        keyed = {401, 429} if path == "/metrics" else set()
        return sorted({*(op.errors if op else ()), *keyed})
    statuses = {401, 429}
    if operation.get("parameters") or (op and (op.body or op.form)):
        statuses.add(400)
    if path.startswith(ADMIN_PREFIXES):
        statuses.add(403)
    if op is not None:
        statuses.update(op.errors)
    return sorted(statuses)


def _request_body(op: Op, refs: Refs) -> JsonObject | None:
    if op.body is not None:
        return {"required": True, "content": {JSON: {"schema": refs[(op.body, "validation")]}}}
    if op.form:
        fields: JsonObject = {name: ({"type": "string", "format": "binary"} if name == "file"
                         else {"type": "string"}) for name in (*op.form, *op.form_optional)}
        return {"required": True, "content": {MULTIPART: {"schema": {
            "type": "object", "required": [*op.form], "properties": fields}}}}
    return None


def _describe(path: str, operation: JsonObject, op: Op | None, refs: Refs) -> None:
    responses: JsonObject = {}
    if op is None:  # an operation nobody declared: the framework's answer, no 422
        responses = {k: v for k, v in _object(operation.get("responses", {})).items()
                     if k != "422"}
    else:
        responses[str(op.status)] = {"description": SUCCESS.get(op.status, "OK"),
                                     "content": _answer(op, op.answer, refs)}
        for status, model in op.also.items():
            responses[str(status)] = {"description": SUCCESS.get(status, "Answer"),
                                      "content": _answer(op, model, refs)}
        body = _request_body(op, refs)
        if body is not None:
            operation["requestBody"] = body
        if op.job:
            parameters = operation.setdefault("parameters", [])
            if not isinstance(parameters, list):
                raise TypeError(f"an operation's parameters, not {parameters!r}")
            parameters.append(PREFER)
            job = refs[(Job, "serialization")]
            responses["202"] = {"description": SUCCESS[202], "content": {JSON: {"schema": job}}}
            # a repeated Idempotency-Key with ``Prefer: respond-async``: the existing job
            ok = _object(_object(_object(responses["200"])["content"])[JSON])
            ok["schema"] = {"anyOf": [ok["schema"], job]}
    for status in _statuses(path, operation, op):
        responses.setdefault(str(status), _error(status, op))
    operation["responses"] = dict(sorted(responses.items()))


def build(app: FastAPI, registry: Registry | None = None) -> JsonObject:
    """The document of ``app``'s routes, described by their declarations in ``registry``
    (every route of inferd's unless told)."""
    ops = (declared() if registry is None else registry).documented()
    doc: JsonObject = get_openapi(title=app.title, version=app.version, routes=app.routes)
    refs = _schemas(doc, ops)
    components = _object(doc["components"])
    components["securitySchemes"] = SECURITY_SCHEMES
    doc["security"] = KEYED
    for path, item in _object(doc.get("paths", {})).items():
        for method, operation in _object(item).items():
            op = ops.get((method, path))
            _describe(path, _object(operation), op, refs)
            _security(path, _object(operation), op)
    schemas = _object(components["schemas"])
    for schema in ("HTTPValidationError", "ValidationError"):
        schemas.pop(schema, None)
    return doc


def install_openapi(app: FastAPI, registry: Registry | None = None) -> None:
    """Make ``app.openapi()`` (and ``/openapi.json``) return the document above, built once."""

    def openapi() -> JsonObject:
        if app.openapi_schema is None:
            app.openapi_schema = build(app, registry)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
